"""What a revision changed (app/articles/diff.py): words inside a changed line, whole lines added or removed,
long unchanged stretches folded, and text only (the page escapes it)."""

from __future__ import annotations

from app.articles.diff import MAX_WORD_DIFF_TOKENS, MIN_FOLDED, Piece, diff_markdown


def kinds(old: str, new: str) -> list[tuple[str, str]]:
    return [(piece.kind, piece.text) for piece in diff_markdown(old, new).pieces]


def test_a_changed_word_is_shown_alone_inside_its_line() -> None:
    assert kinds("# Nina\n\nShe sang jazz.\n", "# Nina\n\nShe sang soul.\n") == [
        ("same", "# Nina\n\nShe sang "),
        ("del", "jazz."),
        ("ins", "soul."),
        ("same", "\n"),
    ]
    diff = diff_markdown("She sang jazz.\n", "She sang soul and jazz.\n")
    assert (diff.inserted_words, diff.deleted_words, diff.changed) == (2, 0, True)


def test_lines_added_and_removed_are_whole_pieces() -> None:
    old = "# A\n\nKept.\n\nGone.\n"
    new = "# A\n\nKept.\n\nNew paragraph.\n\nGone.\n"
    assert ("ins", "New paragraph.\n\n") in kinds(old, new) or ("ins", "\nNew paragraph.\n") in kinds(
        old, new
    )
    removed = kinds(new, old)
    assert [kind for kind, _ in removed].count("del") == 1 and "New paragraph." in dict(removed)["del"]


def test_the_same_text_has_no_change() -> None:
    text = "# A\n\n" + "".join(f"Line {i}.\n" for i in range(50))
    diff = diff_markdown(text, text)
    assert not diff.changed and (diff.inserted_words, diff.deleted_words) == (0, 0)
    assert [piece.kind for piece in diff.pieces] == ["same"]  # a text with no change is not folded away


def test_long_unchanged_stretches_are_folded_around_the_changes() -> None:
    lines = [f"Line {i}.\n" for i in range(40)]
    old = "".join(lines)
    new = "".join([*lines[:20], "Line twenty.\n", *lines[21:]])
    pieces = diff_markdown(old, new).pieces
    assert [piece.kind for piece in pieces] == ["skip", "same", "del", "ins", "same", "skip"]
    assert pieces[0] == Piece("skip", "18 unchanged lines") and pieces[1].text == "Line 18.\nLine 19.\nLine "
    assert pieces[-1] == Piece("skip", "17 unchanged lines")
    # a short stretch between two changes is shown whole
    close = "".join(
        [*lines[:20], "X.\n", *lines[21 : 21 + MIN_FOLDED + 2], "Y.\n", *lines[21 + MIN_FOLDED + 3 :]]
    )
    assert "skip" not in [piece.kind for piece in diff_markdown(old, close).pieces[1:-1]]


def test_the_pieces_are_text_as_written_never_markup() -> None:
    old = "Hi <script>alert(1)</script>.\n"
    new = "Hi <img src=x onerror=alert(2)>.\n"
    pieces = diff_markdown(old, new).pieces
    assert "".join(p.text for p in pieces if p.kind != "ins") == old
    assert "".join(p.text for p in pieces if p.kind != "del") == new


def test_huge_replaced_runs_are_shown_as_lines_not_compared_word_by_word() -> None:
    old = " ".join(f"a{i}" for i in range(MAX_WORD_DIFF_TOKENS)) + "\n"
    new = " ".join(f"b{i}" for i in range(MAX_WORD_DIFF_TOKENS)) + "\n"
    assert kinds(old, new) == [("del", old), ("ins", new)]
