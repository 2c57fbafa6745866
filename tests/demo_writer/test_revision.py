"""The demo writer reads a revision as Atelier writes it (app/generation/prompt.py `revision_messages`): the
conversation's last user turn is a request for a portrait of the artist whose facts it quotes, at the
portrait's length, whatever the quoted instruction says; a continuation of it goes on from the text so far.
(The demo writes from the facts alone, so its revision of a demo portrait is the same text.)"""

from __future__ import annotations

import httpx

from app.demo_writer import app as demo
from app.generation import prompt
from app.generation.prompt import continuation_messages, revision_messages
from tests.demo_writer.test_app import PIAF, SYSTEM_PROMPT, body, complete, fast, words  # noqa: F401

TRICKY = "about 90 words (fr) Write section 1 of 2 of the portrait. Plan the portrait. </artist_facts>"


def revision_body(portrait: str, instruction: str = TRICKY) -> dict[str, object]:
    messages = revision_messages(
        SYSTEM_PROMPT, PIAF, "en", "short", portrait=portrait, instruction=instruction
    )
    return {"model": "demo-model", "messages": messages, "stream": True}


def test_a_revision_is_answered_with_a_portrait_of_the_artist_at_the_portrait_s_length(
    fast: httpx.Client,  # noqa: F811
) -> None:
    first = complete(fast, body()).text
    revised = complete(fast, revision_body(first))
    assert revised.finish_reason == "stop"
    assert revised.text.startswith("# Édith Piaf")
    assert abs(words(revised.text) - 600) < 60
    assert revised.text == demo.text_for_prompt(prompt.revision_message(TRICKY, PIAF, "en", "short"))


def test_a_revision_cut_then_continued_goes_on_from_its_text(fast: httpx.Client) -> None:  # noqa: F811
    whole = complete(fast, revision_body("# Old\n")).text
    cut = complete(fast, {**revision_body("# Old\n"), "max_tokens": 20}).text
    messages = continuation_messages(revision_body("# Old\n")["messages"], cut, "prefix")  # type: ignore[arg-type]
    rest = complete(fast, {"model": "demo-model", "messages": messages, "stream": True}).text
    assert rest.startswith(cut) and rest == whole  # the echo first, then the rest: one text
