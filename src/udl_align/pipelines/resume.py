"""A run's progress kept on disk, so that a killed stack alignment goes on from its last saved
batch.

The folder (``out_dir/.partial``, :data:`FOLDER`) holds the aligned images so far
(``aligned.mrcs``, the stack being written) and ``state.npz``: the results of the first
``written`` aligned particles (``index``, ``angle``, ``tx``, ``ty``, ``score``), the sum of
their aligned images (``total``), the seconds spent, the particle to go on from (``next``) and
the run they belong to (``run``: input, particle counts, batch size, method and reference, as
JSON). A saved state of another run is not used.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from udl_align.io.files import atomic_output
from udl_align.pipelines.aligning import RESULTS, Part

#: the folder of the output folder where a run keeps its progress
FOLDER = ".partial"
#: how often a run saves its progress, in seconds (besides every ``save_every`` batches)
SAVE_SECONDS = 60.0


class Progress:
    """The progress of one run in ``folder``; ``run`` says which run it is (a dict that JSON
    can write)."""

    def __init__(self, folder: Path, run: dict, save_every: int = 0) -> None:
        self.folder, self.run, self.save_every = Path(folder), run, save_every
        self._last_save, self._batches = time.time(), 0

    @property
    def stack(self) -> Path:
        """Where the aligned images are written until the run ends."""
        return self.folder / "aligned.mrcs"

    def start(self, part: Part, resume: bool, log=print) -> tuple[int, int]:
        """With ``resume`` and a saved state of this run: ``part`` filled from it; otherwise
        the folder emptied for a fresh start. Returns the rows of ``part`` filled and the
        particle to go on from."""
        saved = self._load(log) if resume else None
        self._last_save = time.time()
        if saved is None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            return 0, 0
        results = {name: saved[name] for name in RESULTS}
        written = part.restore(results, saved["total"], float(saved["seconds"]))
        return written, int(saved["next"])

    def batch_done(self, part: Part, written: int, next_particle: int) -> None:
        """Save after every ``save_every`` batches and at least every :data:`SAVE_SECONDS`."""
        self._batches += 1
        if (time.time() - self._last_save > SAVE_SECONDS
                or (self.save_every and self._batches % self.save_every == 0)):
            self.save(part, written, next_particle)
            self._last_save = time.time()

    def save(self, part: Part, written: int, next_particle: int) -> None:
        """The first ``written`` rows of ``part`` and the particle to go on from, saved
        atomically."""
        head = {name: getattr(part, name)[:written] for name in RESULTS}
        with atomic_output(self.folder / "state.npz") as tmp:
            np.savez(tmp, run=json.dumps(self.run, sort_keys=True), written=written,
                     next=next_particle, seconds=part.seconds, total=part.total, **head)

    def remove(self) -> None:
        """The folder, at the end of the run."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _load(self, log) -> dict | None:
        """The saved state of this run, or ``None`` (then it starts afresh)."""
        path = self.folder / "state.npz"
        if not path.exists() or not self.stack.exists():
            log("nothing to resume: starting afresh")
            return None
        with np.load(path) as z:
            state = {k: z[k] for k in z.files}
        if json.loads(str(state["run"])) != json.loads(json.dumps(self.run, sort_keys=True)):
            log("the saved run differs (input, reference, method or batch size): starting "
                "afresh")
            return None
        log(f"resuming after {int(state['written'])} aligned particles")
        return state


def remove_progress(out_dir: Path) -> None:
    """Remove what a run into ``out_dir`` kept for resuming."""
    shutil.rmtree(Path(out_dir) / FOLDER, ignore_errors=True)


__all__ = ["Progress", "SAVE_SECONDS", "FOLDER", "remove_progress"]
