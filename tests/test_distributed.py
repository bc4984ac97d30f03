"""udl_align.distributed outside torchrun: one process of one, and the batch check."""

import pytest

from udl_align import distributed
from udl_align.distributed import Ranks
from udl_align.errors import InputError


def test_a_plain_process_is_rank_0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = distributed.start("cpu")
    assert ranks == Ranks() and ranks.main and not ranks.active
    assert ranks.rows(5) == slice(0, 5, 1)
    assert distributed.agree(ranks, True, False) == (True, False)
    distributed.barrier(ranks)
    distributed.stop(ranks)


def test_a_batch_must_split_over_the_processes():
    distributed.check_batch(Ranks(1, 4), 8)
    with pytest.raises(InputError) as info:
        distributed.check_batch(Ranks(0, 3), 8)
    assert str(info.value) == ("the batch size 8 does not split over 3 processes: give a "
                               "multiple of 3")
