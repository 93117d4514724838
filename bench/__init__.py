"""Benchmarks that print figures (never timed assertions in the tests).

Run each from the repository's root as a module, so that ``bench/webhook.py`` and
``bench/controller.py`` do not shadow the packages they measure: ``python -m bench.validate``,
``python -m bench.webhook``, ``python -m bench.controller`` (or ``make bench`` for all three).
"""
