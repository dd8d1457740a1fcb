"""The test cluster's keys and certificates, generated at every start (ECDSA P-256: fast to make).

ca.crt signs: apiserver.crt (what clients verify), kubelet-client.crt (the API server's client
certificate towards the node agent) and node.crt (the node agent's serving certificate, which
the API server verifies). sa.key/sa.pub sign and verify service-account tokens.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: Key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key: Key, issuer: x509.Certificate | None, issuer_key: Key, *, ca: bool = False,
          usage: x509.ObjectIdentifier | None = None, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (),
          org: str | None = None) -> x509.Certificate:
    name = [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
    if org:
        name.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name(name))
               .issuer_name(issuer.subject if issuer else x509.Name(name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if dns or ips:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pair(directory: Path, stem: str, cert: x509.Certificate, key: Key) -> None:
    (directory / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / f"{stem}.key", key)


def write_all(directory: Path, node_name: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("mahavishnu-test-ca", ca_key, None, ca_key, ca=True)
    _write_pair(directory, "ca", ca, ca_key)
    server_key = _key()
    _write_pair(directory, "apiserver", _cert(
        "kube-apiserver", server_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
        dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"), ips=("127.0.0.1", "10.0.0.1")), server_key)
    client_key = _key()
    _write_pair(directory, "kubelet-client", _cert(
        "kube-apiserver-kubelet-client", client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH), client_key)
    node_key = _key()
    _write_pair(directory, "node", _cert(
        f"system:node:{node_name}", node_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
        dns=(node_name,), ips=("127.0.0.1",), org="system:nodes"), node_key)
    sa_key = _key()
    _write_key(directory / "sa.key", sa_key)
    (directory / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
