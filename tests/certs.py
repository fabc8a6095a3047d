"""A small PKI for the tests: a CA, and certificates it issues for servers and clients."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class Authority:
    def __init__(self, directory: Path, name: str = "insmon test CA") -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.file = directory / "ca.pem"
        self.file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, ip: str | None = None, client: bool = False,
              days: int = 30, starts: datetime.timedelta = datetime.timedelta(minutes=-5),
              rsa_bits: int | None = None, sha1: bool = False,
              san: bool = True) -> tuple[Path, Path]:
        """(certificate file, key file) for a server at `ip`, or a client: valid from
        `starts` to `days` after the test's now; an agency's old one with an RSA key of
        `rsa_bits`, signed with SHA-1, or naming `ip` only in its CN (no `san`)."""
        key = (rsa.generate_private_key(65537, rsa_bits) if rsa_bits
               else ec.generate_private_key(ec.SECP256R1()))
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                               ip if ip and not san else name)]))
                   .issuer_name(self.name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now + starts)
                   .not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.CLIENT_AUTH if client
                        else ExtendedKeyUsageOID.SERVER_AUTH]), False))
        if ip and san:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip))]), False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        if sha1:  # cryptography signs no SHA-1 certificate any more: OpenSSL's tool does
            self._resign_sha1(cert_file, key_file, days)
        return cert_file, key_file

    def _resign_sha1(self, cert_file: Path, key_file: Path, days: int) -> None:
        """The same certificate (subject, key, extensions) signed again with SHA-1, valid
        from now for `days`."""
        ca_key, request = self.dir / "ca.key", cert_file.with_suffix(".csr")
        ca_key.write_bytes(self.key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        for argv in (["-x509toreq", "-in", cert_file, "-signkey", key_file, "-out", request],
                     ["-req", "-in", request, "-CA", self.file, "-CAkey", ca_key, "-sha1",
                      "-days", days, "-set_serial", x509.random_serial_number(),
                      "-out", cert_file]):
            subprocess.run(["openssl", "x509", "-copy_extensions", "copyall", *map(str, argv)],
                           check=True, capture_output=True, timeout=30)
