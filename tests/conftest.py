import os

from hypothesis import HealthCheck, settings

# CI machines are noisy: no per-example deadline, and a fixed example budget so runs are
# comparable. `HYPOTHESIS_PROFILE=thorough` digs deeper locally.
settings.register_profile(
    "default", deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=2000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
