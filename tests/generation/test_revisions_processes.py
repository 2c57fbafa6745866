"""A revision on two processes (one private redis-server, one SQLite file; tests/generation/
test_several_processes.py): the job's record carries its revision, so the process that takes it over goes on
from the same conversation (not a first portrait's prompt), and a revision asked on the other process while
it runs is a conflict."""

from __future__ import annotations

import pytest

from app.catalog.schemas import ArtistFacts
from app.generation import prompt
from app.generation.errors import PortraitBusy
from app.generation.jobs import Revision
from app.generation.portrait import Accepted, RevisionRequest
from app.streaming.events import Continued, Done
from tests.fakes.chat import Gate, script
from tests.generation.parts import SYSTEM_PROMPT, TRUSTED
from tests.generation.test_revisions import FIRST, INSTRUCTION, _draft
from tests.generation.test_several_processes import (
    drain_within,
    gated,
    reached_text,
    run,
    running_on,
    server,  # noqa: F401 (the module's redis-server fixture)
    two_processes,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(30)


def test_a_revision_handed_over_goes_on_from_its_conversation_on_the_other_process(
    sqlite_database: str,
    server: RedisServer,  # noqa: F811
) -> None:
    async def scenario() -> None:
        gate = Gate()
        async with two_processes(
            sqlite_database, server, [gated(gate, "# Nina\n\n", "Shorter.\n")], [script("Shorter.\n")]
        ) as (a, b, a_stack):
            artist = await a.add_artist()
            await a.articles.store(_draft(artist, FIRST))
            outcome = await a.portraits.revise(RevisionRequest(artist.id, "en", "long", INSTRUCTION, TRUSTED))
            assert isinstance(outcome, Accepted)
            job = await running_on(a, artist.id)
            await reached_text(a, job)

            # what any process knows of it: its record, with the revision
            board = b.registry.board
            assert board is not None
            record = await board.record(job.id)
            assert record is not None
            assert record.revision == Revision(INSTRUCTION, 1, FIRST, article_id=record.revision.article_id)
            # a revision asked on B meanwhile is a conflict: A's job holds the portrait
            with pytest.raises(PortraitBusy):
                await b.portraits.revise(RevisionRequest(artist.id, "en", "long", "other", TRUSTED))

            reader = await b.portraits.open(b.request(artist.id, refresh=True, client=TRUSTED))
            await a_stack.aclose()  # A stops: its revision is handed over

            events = await drain_within(reader)
            seams = [e.payload for e in events if isinstance(e.payload, Continued)]
            assert [(seam.reason, seam.attempt) for seam in seams] == [("takeover", 1)]
            done = events[-1].payload
            assert isinstance(done, Done) and done.version == 2
            facts = ArtistFacts.of(artist)
            assert b.chat.calls[0] == [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt.user_message(facts, "en", "long")},
                {"role": "assistant", "content": FIRST},
                {"role": "user", "content": prompt.revision_message(INSTRUCTION, facts, "en", "long")},
                {"role": "assistant", "content": "# Nina\n\n", "prefix": True},
            ]
            _, stored = await b.articles.lookup(artist.id, "en", "long")
            assert stored is not None and stored.job_id == job.id
            assert (stored.markdown, stored.instruction, stored.revises_version) == (
                "# Nina\n\nShorter.\n",
                INSTRUCTION,
                1,
            )
            gate.open()

    run(scenario)
