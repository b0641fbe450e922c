"""The breaker: it refuses during the cool-down and lets one probe through after it."""

from pipeline.serving.breaker import Breaker


def test_the_breaker_refuses_during_the_cool_down_and_probes_once_after_it():
    now = [100.0]
    breaker = Breaker(cooldown_s=0.5, clock=lambda: now[0])
    assert breaker.allow() and not breaker.is_open
    breaker.failed("Timeout reading from socket")
    assert breaker.is_open and not breaker.allow() and breaker.retry_after_s == 1
    now[0] += 0.6
    assert breaker.allow()          # the probe
    assert not breaker.allow()      # everyone else waits for its outcome
    breaker.failed("still down")
    now[0] += 0.6
    assert breaker.allow()
    breaker.succeeded()
    assert not breaker.is_open and breaker.allow() and breaker.allow()
