"""topgun's test suite, run by trial."""

import os

from hypothesis import HealthCheck, settings

# Property tests run with no per-example deadline: the CI machine is shared and noisy, and a
# deadline would turn load into false failures. The example count is what gives confidence.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=300,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("TOPGUN_HYPOTHESIS_PROFILE", "default"))
