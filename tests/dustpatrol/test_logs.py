"""Logs: one JSON object a line with the request or job id bound to it; the API's request id
comes back in a header and reaches what is logged while the request is served."""

from __future__ import annotations

import io
import json
import logging

from dustpatrol.logs import ContextFilter, JsonFormatter, TextFormatter, log_context


def _emit(formatter: logging.Formatter, message: str, **fields: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with log_context(**fields):
            logger.warning(message, "x")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_the_bound_ids_and_nothing_leaks_out_of_the_block() -> None:
    line = _emit(JsonFormatter(), "job failed: %s", job_id=42, job_kind="frame_detect")
    record = json.loads(line)
    assert record["message"] == "job failed: x" and record["level"] == "WARNING"
    assert record["job_id"] == 42 and record["job_kind"] == "frame_detect"
    assert record["time"].endswith("+00:00")
    after = json.loads(_emit(JsonFormatter(), "later %s"))
    assert "job_id" not in after


def test_nested_blocks_add_fields_and_text_lines_show_them() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("test.logs.nested")
    logger.addHandler(handler)
    logger.propagate = False
    with log_context(request_id="abc"), log_context(job_id=7):
        logger.warning("inside")
    logger.removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("inside [request_id=abc job_id=7]")
