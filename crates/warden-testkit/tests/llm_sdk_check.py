#!/usr/bin/env python3
"""Points the official `openai` and `anthropic` SDKs at an LLM endpoint (the test kit's stand-in, or warden in
front of it) and checks that they parse everything it answers, streamed and not, with strict response validation
on (so every field the SDKs' types require must be present and well-typed), that the assembled text is the
expected answer, and that usage is reported.

Usage: llm_sdk_check.py BASE_URL [ANSWER]

BASE_URL is `http://HOST:PORT` (the OpenAI client gets BASE_URL/v1). ANSWER defaults to the stand-in's default
answer. The keys are the stand-in's defaults unless OPENAI_API_KEY / ANTHROPIC_API_KEY are set. Exit status 0 when
every check passes, 1 when one fails, 3 when the SDKs are not installed.
"""

import base64
import os
import struct
import sys

try:
    import anthropic
    import openai
except ImportError as error:
    print(f"llm_sdk_check: {error}: pip install openai anthropic", file=sys.stderr)
    sys.exit(3)

DEFAULT_ANSWER = (
    "Sure. Write to Jane Roe at jane.roe@example.com or call +1 415 555 0100; her card is 4111 1111 1111 1111."
)
SENSITIVE = ["jane.roe@example.com", "+1 415 555 0100", "4111 1111 1111 1111"]

BASE_URL = sys.argv[1].rstrip("/")
ANSWER = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_ANSWER
ANSWER_WORDS = len(ANSWER.split())

oai = openai.OpenAI(
    base_url=f"{BASE_URL}/v1",
    api_key=os.environ.get("OPENAI_API_KEY", "sk-upstream-openai-test"),
    max_retries=0,
    timeout=30,
    _strict_response_validation=True,
)
ant = anthropic.Anthropic(
    base_url=BASE_URL,
    api_key=os.environ.get("ANTHROPIC_API_KEY", "sk-ant-upstream-test"),
    max_retries=0,
    timeout=30,
    _strict_response_validation=True,
)

CHAT_MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Who is Jane?"},
]


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def check_split(deltas, what):
    """The deltas assemble the answer; with the default answer, no sensitive value arrives in one delta."""
    check("".join(deltas) == ANSWER, f"{what}: deltas {deltas!r} do not assemble the answer")
    check(len(deltas) > 1, f"{what}: the answer came in {len(deltas)} delta(s)")
    if ANSWER == DEFAULT_ANSWER:
        for value in SENSITIVE:
            check(all(value not in delta for delta in deltas), f"{what}: {value!r} arrived whole in one delta")


def chat_non_stream():
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES)
    check(completion.choices[0].message.content == ANSWER, f"chat: {completion.choices[0].message.content!r}")
    check(completion.choices[0].finish_reason == "stop", "chat: finish_reason")
    check(completion.model == "gpt-4o-mini", "chat: model")
    check(completion.usage is not None, "chat: usage missing")
    check(completion.usage.prompt_tokens == 6, f"chat: prompt_tokens {completion.usage.prompt_tokens}")
    check(completion.usage.completion_tokens == ANSWER_WORDS, "chat: completion_tokens")
    check(completion.usage.total_tokens == 6 + ANSWER_WORDS, "chat: total_tokens")


def chat_stream(include_usage):
    options = {"include_usage": True} if include_usage else None
    stream = oai.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT_MESSAGES, stream=True, **({"stream_options": options} if options else {})
    )
    chunks = list(stream)
    deltas = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    check_split(deltas, "chat stream")
    check(chunks[0].choices[0].delta.role == "assistant", "chat stream: the first delta has no role")
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    check(finishes == ["stop"], f"chat stream: finish reasons {finishes}")
    usage = [chunk.usage for chunk in chunks if chunk.usage is not None]
    if include_usage:
        check(len(usage) == 1 and not chunks[-1].choices, "chat stream: no final usage chunk")
        check(usage[0].completion_tokens == ANSWER_WORDS and usage[0].prompt_tokens == 6, f"usage {usage[0]}")
    else:
        check(not usage, "chat stream: usage without include_usage")


def chat_stream_plain():
    chat_stream(include_usage=False)


def chat_stream_with_usage():
    chat_stream(include_usage=True)


def chat_stream_helper():
    with oai.chat.completions.stream(
        model="gpt-4o-mini", messages=CHAT_MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    check_split(deltas, "chat stream helper")
    check(final.choices[0].message.content == ANSWER, "chat stream helper: final content")
    check(final.usage is not None and final.usage.total_tokens == 6 + ANSWER_WORDS, "chat stream helper: usage")


def chat_limits_and_echo():
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES, max_completion_tokens=3)
    check(completion.choices[0].finish_reason == "length", "chat limit: finish_reason")
    check(completion.choices[0].message.content == " ".join(ANSWER.split()[:3]), "chat limit: text")
    check(completion.usage.completion_tokens == 3, "chat limit: completion_tokens")
    echoed = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "ECHO: my prompt, back"}]
    )
    check(echoed.choices[0].message.content == "my prompt, back", f"echo: {echoed.choices[0].message.content!r}")
    overridden = oai.chat.completions.create(
        model="gpt-4o-mini", messages=CHAT_MESSAGES, extra_headers={"x-standin-answer": "from a header"}
    )
    check(overridden.choices[0].message.content == "from a header", "x-standin-answer")


def responses_non_stream():
    response = oai.responses.create(model="gpt-4o", input="Who is Jane?", instructions="Be terse.")
    check(response.output_text == ANSWER, f"responses: {response.output_text!r}")
    check(response.status == "completed", "responses: status")
    check(response.usage is not None, "responses: usage missing")
    check(response.usage.input_tokens == 5, f"responses: input_tokens {response.usage.input_tokens}")
    check(response.usage.output_tokens == ANSWER_WORDS, "responses: output_tokens")
    listed = oai.responses.create(
        model="gpt-4o", input=[{"role": "user", "content": [{"type": "input_text", "text": "ECHO: listed input"}]}]
    )
    check(listed.output_text == "listed input", f"responses list input: {listed.output_text!r}")


def responses_stream():
    events = list(oai.responses.create(model="gpt-4o", input="Who is Jane?", stream=True))
    numbers = [event.sequence_number for event in events]
    check(numbers == sorted(numbers) and len(set(numbers)) == len(numbers), f"responses stream: {numbers}")
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    check_split(deltas, "responses stream")
    done = [event.text for event in events if event.type == "response.output_text.done"]
    check(done == [ANSWER], "responses stream: output_text.done")
    check(events[-1].type == "response.completed", f"responses stream: ends with {events[-1].type}")
    check(events[-1].response.usage.output_tokens == ANSWER_WORDS, "responses stream: usage")
    check(events[-1].response.output_text == ANSWER, "responses stream: completed output")

    with oai.responses.stream(model="gpt-4o", input="Who is Jane?") as stream:
        helper_deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    check_split(helper_deltas, "responses stream helper")
    check(final.output_text == ANSWER and final.usage is not None, "responses stream helper: final response")

    truncated = list(oai.responses.create(model="gpt-4o", input="hi", stream=True, max_output_tokens=2))
    check(truncated[-1].type == "response.incomplete", f"responses limit: ends with {truncated[-1].type}")
    check(truncated[-1].response.incomplete_details.reason == "max_output_tokens", "responses limit: reason")
    check(truncated[-1].response.output_text == " ".join(ANSWER.split()[:2]), "responses limit: text")


def embeddings():
    # By default the SDK asks for base64 and decodes it after parsing, so strict validation (which expects a list of
    # floats before that) would refuse what the real API sends too: this call goes through a lenient client.
    lenient = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=oai.api_key, max_retries=0, timeout=30)
    default = lenient.embeddings.create(
        model="text-embedding-3-small", input=["one two", "three"], dimensions=8
    )
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input=["one two", "three"], dimensions=8, encoding_format="float"
    )
    check(len(default.data) == 2 and [item.index for item in default.data] == [0, 1], "embeddings: data")
    for encoded, plain in zip(default.data, floats.data):
        check(len(encoded.embedding) == 8, "embeddings: dimensions")
        check(all(abs(a - b) < 1e-6 for a, b in zip(encoded.embedding, plain.embedding)), "embeddings: encodings differ")
    check(default.usage.prompt_tokens == 3 and default.usage.total_tokens == 3, f"embeddings: usage {default.usage}")
    raw = oai.embeddings.with_raw_response.create(
        model="text-embedding-3-large", input="one", encoding_format="base64"
    ).http_response.json()
    vector = struct.unpack(f"<{3072}f", base64.b64decode(raw["data"][0]["embedding"]))
    check(abs(sum(value * value for value in vector) - 1.0) < 1e-3, "embeddings: not a unit vector")


def models():
    ids = [model.id for model in oai.models.list()]
    for expected in ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]:
        check(expected in ids, f"models: {expected} missing from {ids}")
    check(oai.models.retrieve("gpt-4o").id == "gpt-4o", "models: retrieve")


ANTHROPIC_REQUEST = {
    "model": "claude-haiku-4-5",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "Be terse."}],
    "messages": [{"role": "user", "content": "Who is Jane?"}],
}


def anthropic_non_stream():
    message = ant.messages.create(**ANTHROPIC_REQUEST)
    check(message.content[0].text == ANSWER, f"messages: {message.content[0].text!r}")
    check(message.stop_reason == "end_turn", "messages: stop_reason")
    check(message.usage.input_tokens == 5, f"messages: input_tokens {message.usage.input_tokens}")
    check(message.usage.output_tokens == ANSWER_WORDS, "messages: output_tokens")
    limited = ant.messages.create(**{**ANTHROPIC_REQUEST, "max_tokens": 4})
    check(limited.stop_reason == "max_tokens", "messages limit: stop_reason")
    check(limited.content[0].text == " ".join(ANSWER.split()[:4]), "messages limit: text")
    counted = ant.messages.count_tokens(
        model="claude-haiku-4-5", system="Be terse.", messages=[{"role": "user", "content": "Who is Jane?"}]
    )
    check(counted.input_tokens == 5, f"count_tokens: {counted.input_tokens}")


def anthropic_stream():
    events = list(ant.messages.create(**ANTHROPIC_REQUEST, stream=True))
    types = [event.type for event in events]
    check(types[:2] == ["message_start", "content_block_start"], f"messages stream: {types}")
    check(types[-3:] == ["content_block_stop", "message_delta", "message_stop"], f"messages stream: {types}")
    deltas = [event.delta.text for event in events if event.type == "content_block_delta"]
    check_split(deltas, "messages stream")
    check(events[0].message.usage.input_tokens == 5, "messages stream: input usage")
    check(events[-2].usage.output_tokens == ANSWER_WORDS, "messages stream: output usage")
    check(events[-2].delta.stop_reason == "end_turn", "messages stream: stop_reason")

    with ant.messages.stream(**ANTHROPIC_REQUEST) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    check_split(texts, "messages stream helper")
    check(final.content[0].text == ANSWER, "messages stream helper: final text")
    check(final.usage.output_tokens == ANSWER_WORDS and final.usage.input_tokens == 5, "messages stream helper: usage")


def errors():
    wrong_openai = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key="sk-wrong", max_retries=0)
    try:
        wrong_openai.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES)
        raise AssertionError("openai: a wrong key was accepted")
    except openai.AuthenticationError as error:
        check(error.status_code == 401 and error.code == "invalid_api_key", f"openai 401: {error}")
    wrong_anthropic = anthropic.Anthropic(base_url=BASE_URL, api_key="sk-ant-wrong", max_retries=0)
    try:
        wrong_anthropic.messages.create(**ANTHROPIC_REQUEST)
        raise AssertionError("anthropic: a wrong key was accepted")
    except anthropic.AuthenticationError as error:
        check(error.status_code == 401, f"anthropic 401: {error}")
    try:
        oai.chat.completions.create(model="gpt-4o-mini", messages=CHAT_MESSAGES, extra_headers={"x-standin-error": "429"})
        raise AssertionError("openai: no rate limit error")
    except openai.RateLimitError as error:
        check(error.code == "rate_limit_exceeded", f"openai 429: {error}")
    try:
        ant.messages.create(**ANTHROPIC_REQUEST, extra_headers={"x-standin-error": "529"})
        raise AssertionError("anthropic: no overloaded error")
    except anthropic.InternalServerError as error:
        check(error.status_code == 529, f"anthropic 529: {error}")


CHECKS = [
    chat_non_stream,
    chat_stream_plain,
    chat_stream_with_usage,
    chat_stream_helper,
    chat_limits_and_echo,
    responses_non_stream,
    responses_stream,
    embeddings,
    models,
    anthropic_non_stream,
    anthropic_stream,
    errors,
]


def main():
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}, against {BASE_URL}")
    failures = 0
    for check_one in CHECKS:
        name = check_one.__name__
        try:
            check_one()
        except Exception as error:  # noqa: BLE001 - report every failing check, then fail
            failures += 1
            print(f"FAIL {name}: {type(error).__name__}: {error}", file=sys.stderr)
    if failures:
        print(f"{failures} of {len(CHECKS)} SDK checks failed", file=sys.stderr)
        sys.exit(1)
    print("all SDK checks passed")


if __name__ == "__main__":
    main()
