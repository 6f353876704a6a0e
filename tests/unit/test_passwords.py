import bcrypt

from aisystant_server.security import hash_password, passwords, verify_password


def test_new_hashes_are_argon2id():
    assert hash_password("a long password").startswith("$argon2id$")


def test_right_and_wrong_passwords():
    stored = hash_password("a long password")
    assert verify_password("a long password", stored) == (True, None)
    assert verify_password("another password", stored) == (False, None)


def test_original_bcrypt_hashes_verify_and_ask_for_an_upgrade():
    legacy = bcrypt.hashpw(b"password123", bcrypt.gensalt(rounds=10)).decode()
    valid, new_hash = verify_password("password123", legacy)
    assert valid
    assert new_hash.startswith("$argon2id$")
    assert verify_password("password123", new_hash) == (True, None)


def test_unknown_account_and_unreadable_hash_never_verify():
    assert verify_password("anything", None) == (False, None)
    assert verify_password("anything", "not-a-hash") == (False, None)


def test_original_bcrypt_hash_of_a_password_over_72_bytes_still_verifies_and_upgrades_whole():
    password = "correct horse battery staple " * 4
    legacy = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=10)).decode()
    valid, new_hash = verify_password(password, legacy)
    assert valid
    assert verify_password(password, new_hash) == (True, None)
    assert verify_password(password[:72], new_hash) == (False, None)


def test_an_argon2_hash_made_with_other_parameters_is_redone_at_login():
    older = passwords.handler("argon2").using(memory_cost=65536, time_cost=3, parallelism=4).hash("long enough")
    valid, new_hash = verify_password("long enough", older)
    assert valid and new_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password("long enough", new_hash) == (True, None)
