"""Dashboard credentials: a file of `user:hash` lines, hashed with scrypt, and the `passwd` command.

A line is `NAME:scrypt$N$r$p$SALT$KEY` (salt and key base64). The file is read once when the
dashboard starts; `ctxscope collector passwd FILE USER` adds or replaces a user's line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

import click

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_PASSWORD_CHARS = 12
USER_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_MAXMEM = 128 * SCRYPT_N * SCRYPT_R * 2


class CredentialsError(ValueError):
    """A credentials file that cannot be read or holds a malformed line."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches the `scrypt$...` hash; False for a hash of another scheme."""
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


class Credentials:
    """The users allowed into the dashboard, by name, with their password hashes."""

    def __init__(self, hashes: dict[str, str]) -> None:
        if not hashes:
            raise CredentialsError("the credentials hold no user")
        self._hashes = hashes
        self._dummy = hash_password(secrets.token_urlsafe(16))

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CredentialsError(f"cannot read the credentials file {path}: {exc.strerror}") from exc
        return cls(parse_lines(text, str(path)))

    def check(self, user: str, password: str) -> bool:
        """Whether the pair is known; an unknown user costs the same scrypt as a known one."""
        encoded = self._hashes.get(user)
        ok = verify_password(password, encoded or self._dummy)
        return ok and encoded is not None


def parse_lines(text: str, origin: str) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not USER_PATTERN.fullmatch(user) or not encoded.startswith("scrypt$"):
            raise CredentialsError(
                f"{origin} line {number}: expected USER:scrypt$... (see `collector passwd`)"
            )
        hashes[user] = encoded
    return hashes


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = KEY_BYTES) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=max(_MAXMEM, 256 * n * r), dklen=dklen
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("user")
@click.option(
    "--password-env",
    default=None,
    help="read the password from this environment variable instead of prompting",
)
def passwd(path: Path, user: str, password_env: str | None) -> None:
    """Add USER (or change their password) in the dashboard credentials file PATH (mode 0600)."""
    if not USER_PATTERN.fullmatch(user):
        raise click.ClickException("a user name is 1-64 letters, digits or _ . @ -")
    if password_env:
        password = os.environ.get(password_env, "")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_CHARS:
        raise click.ClickException(f"a password has at least {MIN_PASSWORD_CHARS} characters")
    try:
        hashes = parse_lines(path.read_text(encoding="utf-8"), str(path)) if path.exists() else {}
    except (CredentialsError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    hashes[user] = hash_password(password)
    text = "".join(f"{name}:{encoded}\n" for name, encoded in sorted(hashes.items()))
    try:
        _replace_private(path, text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror or exc}") from exc
    click.echo(f"{path}: {user} set ({len(hashes)} user(s))", err=True)


def _replace_private(path: Path, text: str) -> None:
    """Write `path` owner-only in one step (a crash leaves the old file whole, never an empty one),
    creating its folder owner-only where it is missing (a fresh machine has no ~/.config/ctxscope)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.new")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staged, path)
