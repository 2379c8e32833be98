"""moto's server with CloudFront invalidations as AWS runs them, for the tests and the bench.

moto completes an invalidation the moment it is created and has no quotas; a tool that must stay
within CloudFront's cannot be tested against that. Started by `scripts/moto-server.sh start`,
this module patches moto's CloudFront backend, then runs moto's server with the arguments given:

- an invalidation is `InProgress` for its distribution's propagation time, then `Completed`
  (AWS's spelling; moto's own says `COMPLETED`). The time is `propagation=SECONDS` in the
  distribution's Comment, else MOTO_CLOUDFRONT_PROPAGATION_SECONDS, else 0, so tests sharing
  one server choose their own. It is read whenever a status is asked for: changing the Comment
  (`scripts/moto-server.sh propagation`) changes it for the invalidations in flight too;
- `CreateInvalidation` answers `TooManyInvalidationsInProgress` (HTTP 400, CloudFront's XML
  error) when the new invalidation would put more than 3,000 file paths, or more than 15
  wildcard paths, in progress on its distribution: the two quotas AWS documents, counted apart.
"""

import os
import re
import sys
import threading
import time

from moto.cloudfront import models
from moto.cloudfront.exceptions import CloudFrontException

MAX_FILES = 3000
MAX_WILDCARDS = 15
_PROPAGATION = re.compile(r"propagation=(\d+(?:\.\d+)?)")
# moto's server answers on threads: the quota check and the append are one step.
_LOCK = threading.Lock()


def _default_propagation():
    try:
        return max(0.0, float(os.environ.get("MOTO_CLOUDFRONT_PROPAGATION_SECONDS", "0")))
    except ValueError:
        return 0.0


def _propagation(distribution):
    comment = getattr(distribution.distribution_config, "comment", "") or ""
    found = _PROPAGATION.search(comment)
    return float(found.group(1)) if found else _default_propagation()


class Invalidation(models.Invalidation):
    """An invalidation that takes its distribution's propagation time to complete."""

    # moto's model registry files a model under the service its module names.
    __module__ = "moto.cloudfront.models"

    def __init__(self, distribution, paths, caller_ref):
        super().__init__(distribution, paths, caller_ref)
        # One <Path> parses as a string, several as a list.
        self.paths = [paths] if isinstance(paths, str) else list(paths or [])
        self.created = time.monotonic()

    @property
    def status(self):
        # Read at each call, so a test that changes its distribution's Comment (for instance to
        # `propagation=0`) completes what is in flight at once.
        done_at = self.created + _propagation(self.distribution)
        return "InProgress" if time.monotonic() < done_at else "Completed"

    @status.setter
    def status(self, _value):
        # moto's constructor writes "COMPLETED"; the status follows the clock instead.
        pass

    def counts(self):
        return _counts(self.paths)


def _counts(paths):
    """File paths and wildcard paths among `paths`."""
    wildcards = sum(1 for path in paths if path.endswith("*"))
    return len(paths) - wildcards, wildcards


def _too_many(kind, limit):
    return CloudFrontException(
        "TooManyInvalidationsInProgress",
        message=(
            "Processing your request would cause the maximum number of "
            f"{kind} invalidations in progress ({limit}) to be exceeded."
        ),
    )


_create = models.CloudFrontBackend.create_invalidation


def create_invalidation(self, dist_id, paths, caller_ref):
    new = _counts([paths] if isinstance(paths, str) else list(paths or []))
    with _LOCK:
        files, wildcards = 0, 0
        for invalidation in self.invalidations.get(dist_id) or []:
            if invalidation.status == "InProgress":
                f, w = invalidation.counts()
                files += f
                wildcards += w
        if files + new[0] > MAX_FILES:
            raise _too_many("file", MAX_FILES)
        if wildcards + new[1] > MAX_WILDCARDS:
            raise _too_many("wildcard", MAX_WILDCARDS)
        return _create(self, dist_id, paths, caller_ref)


models.Invalidation = Invalidation
models.CloudFrontBackend.create_invalidation = create_invalidation

if __name__ == "__main__":
    from moto.server import main

    main(sys.argv[1:])
