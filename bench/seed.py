"""The data the REST benchmarks read: users registered through each backend's own API,
their conversations and messages written straight into its database.

Rows go in with SQL rather than through the API: 16 users x 20 conversations x 50
messages, and a conversation of 10,000 messages, would otherwise take thousands of model
replies. The columns written are the ones both schemas have (ours kept the original's
table and column names); ours fills the rest (`status` complete, `attempt`, ...) with its
defaults. Each conversation ends with a complete assistant reply, so a message sent into
it is never a first exchange: neither backend then asks the model for a title, and a send
costs one model call on both.
"""

import uuid

import requests

from services import PASSWORD

MODEL = "claude-sonnet-4-20250514"
USER_TEXT = ("Our nginx ingress returns 502 for about 5% of requests since this morning's deploy; the pods "
             "look healthy and the upstream keepalive is 60 s. Where do I start?")
ASSISTANT_TEXT = (
    "## Likely cause\n\nA 502 from the ingress means the upstream closed or refused the connection. After a "
    "deploy, the usual suspects are a keepalive timeout on the pods shorter than the ingress's, pods killed "
    "before they drain, or a readiness probe that passes too early.\n\n## Check first\n\n"
    "- `kubectl -n ingress-nginx logs deploy/ingress-nginx-controller | grep ' 502 '`\n"
    "- `kubectl get endpoints <service> -w` during a rollout\n"
    "- compare `keepalive_timeout` on both sides\n\n## Fix\n\n```bash\n"
    "kubectl annotate ingress <name> nginx.ingress.kubernetes.io/upstream-keepalive-timeout=30\n```\n\n"
    "Then add a `preStop` sleep of a few seconds so that pods leave the endpoints before they stop.")
ASSISTANT_META = ('{"model": "%s", "stop_reason": "end_turn", "usage": {"input_tokens": 1200, '
                  '"output_tokens": 180}, "ttft_ms": 300, "duration_ms": 2300}' % MODEL)

CONVERSATIONS_SQL = """
INSERT INTO conversations (user_id, title, created_at, updated_at)
SELECT :user_id, :title || ' ' || g, now() - interval '30 days', now() - make_interval(mins => :count - g)
FROM generate_series(1, :count) AS g ORDER BY g
RETURNING id
"""
# Odd rows are the user's questions, even rows the assistant's complete replies, ten
# seconds apart, the newest now.
MESSAGES_SQL = """
INSERT INTO messages (conversation_id, user_id, content, role, metadata, created_at)
SELECT c.id,
       CASE WHEN g % 2 = 1 THEN :user_id END,
       CASE WHEN g % 2 = 1 THEN :user_text ELSE :assistant_text END,
       CASE WHEN g % 2 = 1 THEN 'user' ELSE 'assistant' END,
       CASE WHEN g % 2 = 1 THEN NULL ELSE CAST(:meta AS jsonb) END,
       now() - make_interval(secs => (:count - g) * 10)
FROM unnest(CAST(:ids AS integer[])) AS c(id), generate_series(1, :count) AS g
ORDER BY c.id, g
"""


def register(url, label):
    """A new user of the backend at `url`: {"id", "email", "token"}."""
    name = f"{label}{uuid.uuid4().hex[:10]}"
    email = f"{name}@example.com"
    response = requests.post(f"{url}/api/auth/register",
                             json={"username": name, "email": email, "password": PASSWORD}, timeout=60)
    if response.status_code != 201:
        raise RuntimeError(f"register at {url} answered {response.status_code}: {response.text[:300]}")
    data = response.json()["data"]
    return {"id": data["user"]["id"], "email": email, "token": data["token"]}


def conversations(database_url, user_id, count, messages, title="bench"):
    """`count` conversations of `messages` messages each (an even number), for `user_id`; their ids."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as connection:
            ids = sorted(row[0] for row in connection.execute(
                sa.text(CONVERSATIONS_SQL), {"user_id": user_id, "title": title, "count": count}))
            if messages:
                connection.execute(sa.text(MESSAGES_SQL), {
                    "ids": ids, "count": messages, "user_id": user_id, "user_text": USER_TEXT,
                    "assistant_text": ASSISTANT_TEXT, "meta": ASSISTANT_META})
        return ids
    finally:
        engine.dispose()


def analyze(database_url):
    """Up-to-date planner statistics, as a database that has lived would have."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
