"""Signatures on the event store's hash chain: tamper evidence against someone who has the code.

The hash chain alone has no secret: anyone with the code can append a correctly hashed event, or
re-hash the chain from some event on, and it still links. So the aggregator signs its chain. For
every batch it appends, it signs the batch's last event - its position and hash - with an Ed25519
private key that lives in a file outside the store; the signature goes into the store in the same
transaction as the batch. Because each hash vouches for every event before it, one signature
covers the whole log up to its position. Whoever holds the *public* key can then check, with
:func:`pectus.events.store.verify`, that every event up to the end was vouched for by the key.

Key files (PEM): the private key, created with mode 0600 and never logged, and its public key
beside it (``chain-signing.key`` -> ``chain-signing.pub``). A key is named by its fingerprint,
``ed25519:`` and the first 16 hex digits of the SHA-256 of its raw 32 public bytes; each stored
signature names the fingerprint of the key that made it, so a chain signed by a rotated-out key
and then by its successor is checked with both public keys.

What a signature means: "the aggregator holding this key wrote the chain up to this position,
ending in this hash". It says nothing about events after the newest signature, and it can be
forged by anyone who can read the private key file - keep that file as guarded as the secret.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["ChainSigner", "PublicKey", "load_or_create_signer", "load_public_key", "public_key_file",
           "write_private_key"]

log = logging.getLogger("pectus.events.signing")

# What is signed names its purpose and format, so a signature can never be taken for another kind.
_CONTEXT = b"pectus event chain v1\n"


def _message(position: int, hash: str) -> bytes:
    return _CONTEXT + f"{position}:{hash}".encode()


@dataclass(frozen=True)
class PublicKey:
    """A public key that checks chain signatures, and its fingerprint."""

    key: Ed25519PublicKey
    fingerprint: str

    @classmethod
    def of(cls, key: Ed25519PublicKey) -> PublicKey:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key, "ed25519:" + hashlib.sha256(raw).hexdigest()[:16])

    def verify(self, position: int, hash: str, signature: bytes) -> bool:
        """True when ``signature`` is this key's signature of the event at ``position`` with ``hash``."""
        try:
            self.key.verify(signature, _message(position, hash))
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class ChainSigner:
    """Signs chain positions with a private key. ``created`` is True when the key file was made
    by this start: the store's earlier signatures (if any) are then by another key."""

    private_key: Ed25519PrivateKey
    public: PublicKey
    created: bool = False

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    def sign(self, position: int, hash: str) -> bytes:
        """The signature of the event at ``position`` whose hash is ``hash`` (64 bytes)."""
        return self.private_key.sign(_message(position, hash))

    def __repr__(self) -> str:  # never print the private key, whatever prints this object
        return f"ChainSigner({self.fingerprint})"


def public_key_file(private_key_file: Path) -> Path:
    """Where the public key of ``private_key_file`` is kept: beside it, ending in ``.pub``."""
    return Path(private_key_file).with_suffix(".pub")


def load_or_create_signer(path: Path) -> ChainSigner:
    """The signer whose private key is in ``path``; the key is created first when the file is
    missing (mode 0600, with its public key beside it, and a log line naming the fingerprint).

    Raises ValueError, naming the file, when it is not an Ed25519 private key in PEM.
    """
    path = Path(path)
    created = False
    if not path.exists():
        _create(path)
        created = True
    pem = path.read_bytes()
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path} is not an unencrypted PEM private key: {error}") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(private_key).__name__}, not an Ed25519 private key")
    signer = ChainSigner(private_key, PublicKey.of(private_key.public_key()), created)
    public_file = public_key_file(path)
    if not public_file.exists():
        public_file.write_bytes(_public_pem(private_key.public_key()))
    if created:
        log.info("created the chain signing key %s (fingerprint %s); keep a copy of its public key %s "
                    "away from this machine, with the auditors, and back the key file up apart from the store",
                    path, signer.fingerprint, public_file)
    elif os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the chain signing key %s can be read by other users: chmod 600 it", path)
    return signer


def load_public_key(path: Path) -> PublicKey:
    """The public key in a PEM file (a ``.pub`` written beside the key, or the private key file
    itself). Raises ValueError, naming the file, for anything else."""
    path = Path(path)
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the public key {path}: {error.strerror}") from None
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        try:  # given the private key file: its public half is what checks
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError):
            raise ValueError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return PublicKey.of(key)


def _create(path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    write_private_key(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))


def write_private_key(path: Path, pem: bytes) -> None:
    """Writes a new private key file, readable by its owner only (mode 0600); FileExistsError
    when ``path`` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a key that appeared meanwhile; the mode is set at creation, so the
    # key is never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
