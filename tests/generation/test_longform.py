"""The pure parts of long-form writing (app/generation/longform.py): the echo, structure, the length score,
the outline and the word budgets."""

from __future__ import annotations

import pytest

from app.generation.longform import (
    EchoFilter,
    length_score,
    next_ask,
    open_structure,
    parse_outline,
)

PREFIX = "# Nina\n\nThe High Priestess of Soul was born"


def filtered(prefix: str, deltas: list[str], *, ended: bool = True) -> str:
    echoes = EchoFilter(prefix)
    out = "".join(echoes.feed(delta) for delta in deltas)
    return out + (echoes.end() if ended else "")


class TestEchoFilter:
    def test_echo_merged_with_the_first_token_then_only_the_new_text(self) -> None:
        assert filtered(PREFIX, [PREFIX + " in", " 1933."]) == " in 1933."

    def test_echo_split_across_many_deltas_then_removed_exactly(self) -> None:
        pieces = [PREFIX[i : i + 3] for i in range(0, len(PREFIX), 3)]
        assert filtered(PREFIX, [*pieces, " in 1933."]) == " in 1933."

    def test_echo_ending_inside_a_delta_then_the_rest_of_it_kept(self) -> None:
        assert filtered(PREFIX, [PREFIX[:10], PREFIX[10:] + " in", " Tryon"]) == " in Tryon"

    def test_no_echo_then_every_character_kept(self) -> None:
        assert filtered(PREFIX, [" in 1933", " in Tryon."]) == " in 1933 in Tryon."

    def test_output_that_starts_like_the_prefix_but_differs_then_kept_whole(self) -> None:
        # "# Nina" then something else: held back while it matched, given back when it stopped matching
        assert filtered(PREFIX, ["# Ni", "na Simone\n\n", "was"]) == "# Nina Simone\n\nwas"

    def test_output_that_stops_inside_the_prefix_then_kept_not_proven_an_echo(self) -> None:
        assert filtered(PREFIX, ["# Nina"]) == "# Nina"

    def test_no_prefix_then_passthrough(self) -> None:
        assert filtered("", ["a", "b"]) == "ab"

    def test_unicode_and_crlf_compared_exactly(self) -> None:
        prefix = "Café — 1933 ✨\r\n"
        assert filtered(prefix, [prefix[:5], prefix[5:] + "next"]) == "next"
        assert filtered(prefix, ["Cafe"]) == "Cafe"  # no accent: not the echo


class TestOpenStructure:
    @pytest.mark.parametrize(
        "markdown",
        [
            "# Title\n\nDone.\n",
            "Text\n\n```python\ncode\n```\n",
            "- one\n- two\n",
            "",
            "A line with # inside\n",
            "~~~\ncode\n~~~~\n",
        ],
    )
    def test_closed_then_none(self, markdown: str) -> None:
        assert open_structure(markdown) is None

    @pytest.mark.parametrize(
        "markdown",
        [
            "Text\n\n```python\ncode\n",
            "Text\n\n## Legacy\n",
            "Text\n\n## Legacy",
            "A list:\n\n- one\n- ",
            "Steps:\n\n1.",
            "~~~~\ncode\n~~~\n",  # a shorter fence does not close a longer one
        ],
    )
    def test_open_then_reason(self, markdown: str) -> None:
        assert open_structure(markdown) is not None


class TestLengthScore:
    @pytest.mark.parametrize(
        ("target", "words", "score"),
        [(3000, 3000, 100.0), (3000, 1500, 50.0), (3000, 6000, 66.7), (3000, 1950, 73.1), (600, 0, 0.0)],
    )
    def test_longbench_write_s_l(self, target: int, words: int, score: float) -> None:
        assert length_score(target, words) == score

    def test_never_below_zero(self) -> None:
        assert length_score(3000, 10) == 0.0 and length_score(100, 100_000) == 0.0


class TestOutline:
    def test_valid_outline_in_a_code_fence_then_budgets_scaled_to_the_target(self) -> None:
        text = (
            'Here is the plan:\n```json\n{"title": "Nina", "sections": ['
            '{"title": "Origins", "point": "Tryon", "words": 100},'
            '{"title": "Rise", "point": "New York", "words": 300},'
            '{"title": "Legacy", "point": "Today", "words": 100}]}\n```'
        )
        plan = parse_outline(text, 3000)
        assert plan is not None and plan.title == "Nina"
        assert [s.target_words for s in plan.sections] == [600, 1800, 600]
        assert [s.title for s in plan.sections] == ["Origins", "Rise", "Legacy"]

    def test_budgets_missing_then_even_shares_adding_up_exactly(self) -> None:
        raw = ",".join(f'{{"title": "S{i}"}}' for i in range(7))
        plan = parse_outline(f'{{"title": "T", "sections": [{raw}]}}', 3000)
        assert plan is not None and sum(s.target_words for s in plan.sections) == 3000
        assert max(s.target_words for s in plan.sections) - min(s.target_words for s in plan.sections) <= 1

    def test_titles_made_one_line(self) -> None:
        plan = parse_outline(
            '{"title": "A\\n# injected", "sections": [{"title": "x\\ny"}, {"title": "z"}]}', 600
        )
        assert plan is not None and plan.title == "A # injected" and plan.sections[0].title == "x y"

    @pytest.mark.parametrize(
        "text",
        [
            "no json at all",
            "{not json}",
            '{"title": "T"}',
            '{"title": "T", "sections": []}',
            '{"title": "T", "sections": [{"title": "only one"}]}',
            '{"title": "", "sections": [{"title": "a"}, {"title": "b"}]}',
            '{"title": "T", "sections": [{"point": "no title"}, {"title": "b"}]}',
            '{"title": "T", "sections": ["a", "b"]}',
            '[{"title": "T"}]',
            '{"title": "T", "sections": [' + ",".join('{"title": "s"}' for _ in range(13)) + "]}",
        ],
    )
    def test_not_an_outline_then_none(self, text: str) -> None:
        assert parse_outline(text, 3000) is None


class TestNextAsk:
    def test_on_plan_then_the_plan(self) -> None:
        assert next_ask(3000, 0, [1000, 1000, 1000], 0, 1.0) == 1000

    def test_model_writing_two_thirds_then_later_sections_ask_more(self) -> None:
        # the first section wrote 650 of 1,000: 2,350 missing over two sections, asked / 0.65
        ask = next_ask(3000, 650, [1000, 1000, 1000], 1, 0.65)
        assert ask == round(2350 / 2 / 0.65)

    def test_bounded_to_three_times_the_plan(self) -> None:
        assert next_ask(3000, 0, [1000, 1000, 1000], 2, 0.1) == 3000
