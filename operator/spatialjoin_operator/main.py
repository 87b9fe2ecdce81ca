"""The kopf operator: every handler module, with the shared setup.

Run it as ``spatialjoin operator`` or ``kopf run -m spatialjoin_operator.main``.
Each handler module also runs alone (``-m spatialjoin_operator.job_handlers``),
which the job lifecycle tests use to keep pools from starting workers.
"""

# Importing registers the handlers (the submission API starts only when enabled).
from . import job_handlers, pool_handlers, submission_api  # noqa: F401
