"""Run one fuzz target under atheris (libFuzzer): ``python -m fuzz.run_atheris TARGET [libFuzzer args]``.

Example, from the repository root, for three minutes on the seed corpus (new
inputs go to the scratch directory given first, so fuzz/corpus stays curated):

    pip install atheris
    mkdir -p /tmp/fz && python -m fuzz.run_atheris open_and_read /tmp/fz fuzz/corpus \\
        -max_total_time=180 -timeout=10 -rss_limit_mb=2048 -artifact_prefix=fuzz/regressions/

Targets are in fuzz/targets.py. A crash (any exception but a MemsegError, a
broken invariant, a timeout or running out of memory) is written to
fuzz/regressions/, which tests/test_fuzz_corpus.py replays on every run.
"""

from __future__ import annotations

import sys


def _usage() -> str:
    from fuzz.targets import TARGETS

    return f"{__doc__}\nTargets: {', '.join(TARGETS)}.\n"


def main() -> None:
    """Instrument memseg, pick the target named by argv[1], hand the rest to libFuzzer."""
    if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.stderr.write(_usage())
        sys.exit(2)
    import atheris

    name = sys.argv.pop(1)
    with atheris.instrument_imports(include=["memseg"]):
        import memseg.forensics  # noqa: F401  (instrumented with the rest of memseg)
        from fuzz.targets import TARGETS
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; one of {', '.join(TARGETS)}")
    atheris.Setup(sys.argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
