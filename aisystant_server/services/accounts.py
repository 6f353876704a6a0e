"""Accounts: registration (in the request's transaction) and password checks (an old hash
is upgraded by a statement of its own)."""

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from aisystant_server.errors import Conflict
from aisystant_server.i18n import Msg
from aisystant_server.models import User
from aisystant_server.security import hash_password, verify_password


def find_by_email(db, email):
    # Case-insensitive, but the original product's unique index was not: should two
    # legacy accounts differ only in case, the exact spelling wins.
    return db.scalars(
        sa.select(User).where(sa.func.lower(User.email) == email.lower())
        .order_by((User.email == email).desc(), User.id)
    ).first()


def register(db, *, username, email, password, avatar_url=None):
    """A new user; `Conflict` naming the field when the email or username is taken."""
    # Hashed before the first query: a transaction holds its pooled connection, and
    # registrations at once would hold them all while they hash.
    password_hash = hash_password(password)
    _raise_if_taken(db, username, email)
    user = User(username=username, email=email, password=password_hash, avatar_url=avatar_url)
    try:
        # A savepoint, so a concurrent registration that wins the race leaves this
        # request's transaction usable for the 409.
        with db.begin_nested():
            db.add(user)
    except IntegrityError:
        _raise_if_taken(db, username, email)
        raise
    return user


def _raise_if_taken(db, username, email):
    if find_by_email(db, email) is not None:
        raise Conflict(details={"email": Msg("field_email_taken")})
    taken = db.scalar(sa.select(User.id).where(sa.func.lower(User.username) == username.lower()))
    if taken is not None:
        raise Conflict(details={"username": Msg("field_username_taken")})


def authenticate(statements, email, password):
    """The user if the password is right, else None; upgrades an old hash on success.

    `statements` makes autocommit sessions. No connection is held while the hash runs
    (~25 ms): the lookup's session is closed first, or logins at once would hold every
    pooled connection. The upgrade is one statement, committed as it runs: in SQLite a
    write locks the database until its commit, and a login waiting for that lock blocks
    its whole process (the wait is in C), the lock holder included."""
    with statements() as session:
        user = find_by_email(session, email)
    valid, new_hash = verify_password(password, user.password if user else None)
    if not valid:
        return None
    if new_hash:
        with statements() as session:
            session.execute(sa.update(User).where(User.id == user.id).values(password=new_hash))
    return user
