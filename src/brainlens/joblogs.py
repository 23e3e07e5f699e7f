"""The error messages of failed workflow jobs, for the terminal.

Snakemake reports a failed job as ``Error in rule X: ... log: <file> (check log
file(s) for error details)``; the message that says what went wrong is inside that
log, written by :func:`brainlens.logutil.setup_logging`. The workflow's ``onerror``
handler calls :func:`failure_report` with Snakemake's own log of the run, which names
the failed jobs' logs, and prints the last error of each. Never imports Snakemake.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

_TRACEBACK = "Traceback (most recent call last):"
#: A line written by logutil's logging format: ``2026-12-01 10:00:00,000 LEVEL name: msg``.
_LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} [A-Z]+ ")
#: Snakemake's line naming a failed job's logs (single jobs and jobs inside a group).
_FAILED_LOGS = re.compile(r"^\s*log: (?P<logs>.+) \(check log file\(s\) for error details\)\s*$")
_ERROR_IN_RULE = re.compile(r"^\s*(?:Error in rule|rule) (?P<rule>[A-Za-z0-9_]+):\s*$")
#: Python's note between chained tracebacks.
_CHAINED = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)


def reports_an_error(log_text: str) -> bool:
    """Whether a job log says why the job failed: a traceback (other than a
    ``KeyboardInterrupt``) or an ``ERROR``/``CRITICAL`` logging line.

    A log without either belongs to a job stopped from outside (Ctrl-C, Snakemake
    stopped, a cluster time or memory limit): its last line is not a reason.
    """
    lines = log_text.splitlines()
    if any(line.startswith(_TRACEBACK) for line in lines):
        exception = last_exception(log_text, max_lines=1)
        return not (exception and exception[0].startswith("KeyboardInterrupt"))
    return any(
        _LOG_LINE.match(line) and (" ERROR " in line or " CRITICAL " in line) for line in lines
    )


def last_exception(log_text: str, max_lines: int = 12) -> list[str]:
    """The exception lines of the last traceback in a job log.

    Parameters
    ----------
    log_text : str
        The whole log.
    max_lines : int
        At most this many lines are returned (a long message is cut, marked ``...``).

    Returns
    -------
    list of str
        ``["brainlens.errors.X: message", "continued message", ...]`` of the last
        traceback (a multi-line message keeps its lines); without a traceback, the
        last ``ERROR``/``CRITICAL`` logging line; else the last non-empty line (e.g.
        ``Killed``); ``[]`` for an empty log.
    """
    lines = log_text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(_TRACEBACK)]
    if starts:
        tail = lines[starts[-1] + 1 :]
        # the frames are indented; the exception starts at the first unindented line
        first = next((i for i, line in enumerate(tail) if line and not line[0].isspace()), None)
        if first is not None:
            message: list[str] = []
            for line in tail[first:]:
                if _LOG_LINE.match(line) or line.startswith(_TRACEBACK) or line in _CHAINED:
                    break
                if line.strip():
                    message.append(line.rstrip())
            if len(message) > max_lines:
                message = [*message[: max_lines - 1], "  ..."]
            return message
    errors = [
        line
        for line in lines
        if _LOG_LINE.match(line) and (" ERROR " in line or " CRITICAL " in line)
    ]
    if errors:
        return [errors[-1].strip()]
    non_empty = [line.strip() for line in lines if line.strip()]
    return non_empty[-1:]


def failed_job_logs(snakemake_log_text: str) -> list[tuple[str, str]]:
    """The (rule, log file) pairs of the jobs Snakemake reported as failed.

    Parameters
    ----------
    snakemake_log_text : str
        Snakemake's log of the run (``.snakemake/log/<time>.snakemake.log``) or its
        terminal output.

    Returns
    -------
    list of (str, str)
        In the order reported, each log once; the rule is ``""`` where the report
        does not name it.
    """
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    rule = ""
    for line in snakemake_log_text.splitlines():
        named = _ERROR_IN_RULE.match(line)
        if named:
            rule = named["rule"]
            continue
        match = _FAILED_LOGS.match(line)
        if not match:
            continue
        for log in match["logs"].split(", "):
            log = log.strip()
            if log and log not in seen:
                seen.add(log)
                found.append((rule, log))
    return found


def failure_report(
    snakemake_logs: Iterable[str | Path],
    workdir: str | Path = ".",
    max_jobs: int = 20,
    skip_rules: Iterable[str] = (),
) -> str:
    """The message that names each failed job and its own last error.

    Parameters
    ----------
    snakemake_logs : iterable of path
        Snakemake's log file(s) of the run (what ``onerror`` receives as ``log``).
    workdir : path
        The working directory that relative job log paths are under.
    max_jobs : int
        At most this many jobs are listed (the rest are counted).
    skip_rules : iterable of str
        Rules whose failures are reported elsewhere (left out).

    Returns
    -------
    str
        ``""`` when no failed job with a log is found.
    """
    skip = set(skip_rules)
    jobs: list[tuple[str, str]] = []
    for path in snakemake_logs:
        path = Path(path)
        if path.is_file():
            for job in failed_job_logs(path.read_text(errors="replace")):
                if job not in jobs and job[0] not in skip:
                    jobs.append(job)
    if not jobs:
        return ""
    parts = [f"brainlens: {len(jobs)} job(s) failed; the error of each (from its log):"]
    for rule, log in jobs[:max_jobs]:
        file = Path(workdir, log)
        lines = last_exception(file.read_text(errors="replace")) if file.is_file() else []
        parts.append(f"  {rule or 'job'} ({log}):")
        parts.extend(f"    {line}" for line in (lines or ["(the log is empty or missing)"]))
    if len(jobs) > max_jobs:
        parts.append(f"  ... and {len(jobs) - max_jobs} more (see Snakemake's log above)")
    return "\n".join(parts)
