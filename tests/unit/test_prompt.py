from aisystant_server.llm.prompt import SYSTEM_PROMPT, build_messages, clean_title, estimate_tokens, marked


def test_the_new_turn_is_last_and_appears_once():
    history = [("user", "q1"), ("assistant", "a1")]
    assert build_messages(history, "q2", 10_000) == [
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}]


def test_history_is_trimmed_by_tokens_oldest_first():
    history = [("user", "old " * 400), ("assistant", "old answer " * 300), ("user", "recent"), ("assistant", "ok")]
    messages = build_messages(history, "now", estimate_tokens("recent") + estimate_tokens("ok") + 20)
    assert [m["content"] for m in messages] == ["recent", "ok", "now"]


def test_the_new_turn_is_kept_even_over_budget():
    assert build_messages([("user", "a"), ("assistant", "b")], "x" * 10_000, 100) == [
        {"role": "user", "content": "x" * 10_000}]


def test_it_starts_with_a_user_turn_and_merges_repeated_roles():
    history = [("assistant", "orphan"), ("user", "first try"), ("user", "second try")]
    assert build_messages(history, "third", 10_000) == [
        {"role": "user", "content": "first try\n\nsecond try\n\nthird"}]


def test_system_prompt_asks_for_the_users_language_markdown_and_care():
    for phrase in ("DevOps", "language", "Markdown", "destructive"):
        assert phrase in SYSTEM_PROMPT


def test_titles_are_cleaned_and_at_most_50_characters():
    assert clean_title('  "Pods en CrashLoopBackOff."  ') == "Pods en CrashLoopBackOff"
    long = clean_title("word " * 30)
    assert len(long) <= 50 and long.endswith("…")


def test_a_partial_answer_says_it_was_interrupted():
    assert marked("Check the", "cancelled").startswith("Check the\n\n[The user stopped")
    assert "error" in marked("Check the", "error")
    assert marked("Done.", "complete") == "Done."
