"""Checkpoints: a training group's snapshot on disk, so that an interrupted sweep resumes."""
import json
import time
import zipfile
from pathlib import Path

import numpy as np

from linclf.util import interrupts
from linclf.util.errors import LinclfError
from linclf.util.files import atomic_write, is_regular, json_ready, open_regular


class Checkpoint:
    """A training group's snapshot on disk (loop.train_group's `checkpoint`), so that an
    interrupted group goes on from its last saved epoch. A hidden .npz file: arrays, and the facts
    as JSON. Saved at most every `every_seconds` (0: after every epoch). A snapshot that cannot be
    read, or that the trainer finds does not fit its group, is not used: the group starts over.
    `log(line)` is told at once whether the group resumes or starts over, and why; `note` keeps
    that line."""

    def __init__(self, path, every_seconds=5.0, log=lambda line: None):
        self.path, self.every_seconds, self.log = Path(path), every_seconds, log
        self.saved_epoch, self.note, self.failed = None, "", False
        self._last = time.monotonic()

    def _say(self, line):
        self.note = line
        self.log(line)

    def load(self):
        try:
            if not is_regular(self.path):
                return None
            with open_regular(self.path) as stream, np.load(stream, allow_pickle=False) as archive:
                facts = json.loads(str(archive["facts"]))
                arrays = {key[len("array."):]: archive[key] for key in archive.files if key.startswith("array.")}
            if not isinstance(facts, dict):
                raise ValueError("facts are not an object")
        except LinclfError:
            self.refused("is not a regular file")
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
            self.refused(f"is damaged ({type(error).__name__})")
            return None
        return {"facts": facts, "arrays": arrays}

    def resumed(self, epoch):
        """The trainer goes on from the snapshot, after `epoch` epochs."""
        self.saved_epoch = epoch
        self._say(f"continuing from its checkpoint after epoch {epoch}")

    def refused(self, reason):
        """The snapshot is not used (reason: a few words); the group starts over."""
        self.saved_epoch = None
        self._say(f"its checkpoint {self.path} {reason}: started over")

    def save(self, snapshot, epoch):
        """Write the snapshot after `epoch` epochs, whole (a signal waits until it is written). One
        that cannot be written (a full disk) is a warning, and no more are tried for this group:
        the last one written, if any, stays, and an interrupted group resumes from it or starts
        over; the sweep goes on."""
        if self.failed or time.monotonic() - self._last < self.every_seconds:
            return
        arrays = {f"array.{name}": value for name, value in snapshot["arrays"].items()}
        text = json.dumps(snapshot["facts"], default=json_ready)
        with interrupts.held():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(self.path, lambda stream: np.savez(stream, facts=np.array(text), **arrays))
            except (OSError, LinclfError) as error:
                self.failed = True
                reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
                self.log(f"warning: cannot write its checkpoint {self.path} ({reason}); training goes on "
                         f"without one, and an interrupted group resumes from an earlier one or starts over")
                return
        self.saved_epoch, self._last = epoch, time.monotonic()

    def remove(self):
        self.path.unlink(missing_ok=True)
