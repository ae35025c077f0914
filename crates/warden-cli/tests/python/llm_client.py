"""Drives warden's HTTP front end with the official OpenAI and Anthropic SDKs, as a workflow would: the SDK's base
URL points at warden, its API key is the caller's warden credential. Prints one JSON object with what the client
saw; the Rust end-to-end tests assert on it (no PII, valid frames, refusals with warden's reasons).

usage: llm_client.py SCENARIO WARDEN_URL API_KEY [ARG...]
"""

import json
import os
import sys
import urllib.request

try:
    import anthropic
    import openai
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(json.dumps({"error": f"{error}: pip install openai anthropic"}))
    sys.exit(2)


def sse_frames(response):
    """Every SSE frame of a raw streamed response, checked: returns (frames, problems)."""
    frames, problems, current = [], [], []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\n").rstrip("\r")
        if line == "":
            if current:
                frames.append(current)
                current = []
            continue
        current.append(line)
    if current:
        problems.append(f"unterminated frame at the end: {current}")
    for frame in frames:
        fields = {}
        for line in frame:
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if name not in ("event", "data", "id", "retry"):
                problems.append(f"unknown field {name!r} in {frame}")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        data = "\n".join(fields.get("data", []))
        if not data:
            problems.append(f"frame without data: {frame}")
        elif data != "[DONE]":
            try:
                json.loads(data)
            except ValueError as error:
                problems.append(f"frame data is not JSON ({error}): {data!r}")
    return frames, problems


def openai_chat(base, key, model="gpt-4o-mini"):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    out = {}
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}])
    out["text"] = completion.choices[0].message.content
    out["usage"] = completion.usage.model_dump() if completion.usage else None
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    deltas, chunks = [], 0
    for chunk in stream:
        chunks += 1
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
    out["stream_text"] = "".join(deltas)
    out["stream_deltas"] = deltas
    out["stream_chunks"] = chunks
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=json.dumps(
            {"model": model, "messages": [{"role": "user", "content": "Hello"}], "stream": True}
        ).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        out["raw_status"] = response.status
        out["raw_content_type"] = response.headers.get("content-type")
        frames, problems = sse_frames(response)
    out["raw_frames"] = ["\n".join(frame) for frame in frames]
    out["frame_problems"] = problems
    return out


def openai_chat_cut(base, key):
    """A stream the upstream cuts after 5 deltas: what the SDK raises."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        extra_headers={"x-standin-abort-after": "5"},
    )
    text = []
    try:
        for chunk in stream:
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
    except openai.APIError as error:
        return {"text": "".join(text), "raised": f"{type(error).__name__}: {error}"}
    return {"text": "".join(text), "raised": None}


def openai_responses(base, key, model="gpt-4o-mini"):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    out = {}
    response = client.responses.create(model=model, input="Hello")
    out["text"] = response.output_text
    deltas = []
    with client.responses.stream(model=model, input="Hello") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    out["stream_text"] = "".join(deltas)
    out["final_text"] = final.output_text
    out["usage"] = final.usage.model_dump() if final.usage else None
    return out


def anthropic_messages(base, key, model="claude-haiku-4-5"):
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    out = {}
    message = client.messages.create(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "Hello"}]
    )
    out["text"] = "".join(block.text for block in message.content if block.type == "text")
    out["usage"] = message.usage.model_dump()
    deltas = []
    with client.messages.stream(
        model=model, max_tokens=200, messages=[{"role": "user", "content": "Hello"}]
    ) as stream:
        for text in stream.text_stream:
            deltas.append(text)
        final = stream.get_final_message()
    out["stream_text"] = "".join(deltas)
    out["final_text"] = "".join(block.text for block in final.content if block.type == "text")
    out["stream_usage"] = final.usage.model_dump()
    return out


def refusal(error):
    return {
        "type": type(error).__name__,
        "status": getattr(error, "status_code", None),
        "message": str(error),
        "retry_after": error.response.headers.get("retry-after") if getattr(error, "response", None) else None,
    }


def openai_model(base, key, model):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello"}])
        return {"refused": None}
    except openai.APIStatusError as error:
        return {"refused": refusal(error)}


def openai_prompt(base, key, prompt):
    """One chat request with this prompt; ECHO: prompts come back as the stand-in received them."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    try:
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
        )
        return {"text": completion.choices[0].message.content, "refused": None}
    except openai.APIStatusError as error:
        return {"refused": refusal(error)}


def anthropic_prompt(base, key, prompt, model="claude-haiku-4-5"):
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    try:
        message = client.messages.create(
            model=model, max_tokens=200, messages=[{"role": "user", "content": prompt}]
        )
        return {"text": "".join(block.text for block in message.content if block.type == "text"), "refused": None}
    except anthropic.APIStatusError as error:
        return {"refused": refusal(error)}


def openai_until_refused(base, key, limit):
    """Requests until one is refused (at most `limit`): how many went through, and the refusal."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    done = 0
    for _ in range(int(limit)):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
            done += 1
        except openai.APIStatusError as error:
            return {"completed": done, "refused": refusal(error)}
    return {"completed": done, "refused": None}


def openai_file_upload(base, key, path, purpose="assistants"):
    """Uploads a file (multipart/form-data), as an agent adding a document (or a batch's input) does: the status it
    got, and the message of an error."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    try:
        uploaded = client.files.create(file=open(path, "rb"), purpose=purpose)
        return {"status": 200, "id": uploaded.id}
    except openai.APIStatusError as error:
        return {"status": error.status_code, "message": str(error)}


def openai_upload_start(base, key, path, purpose):
    """Starts an upload in parts of this file (`uploads.create`): the status it got, and the message of an error."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    size = os.path.getsize(path)
    try:
        name = os.path.basename(path)
        upload = client.uploads.create(bytes=size, filename=name, mime_type="text/jsonl", purpose=purpose)
        return {"status": 200, "id": upload.id}
    except openai.APIStatusError as error:
        return {"status": error.status_code, "message": str(error)}


def outcomes(calls):
    """Runs each named call: what each got, {"status": 200} or the refusal."""
    seen = {}
    for name, call in calls.items():
        try:
            call()
            seen[name] = {"status": 200}
        except openai.APIStatusError as error:
            seen[name] = refusal(error)
    return seen


def openai_other_models(base, key, audio_path):
    """An image and a transcription, each with a model of its own (JSON and multipart bodies): what each got."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    return outcomes({
        "image": lambda: client.images.generate(model="dall-e-3", prompt="a cat"),
        "transcription": lambda: client.audio.transcriptions.create(model="whisper-1", file=open(audio_path, "rb")),
    })


def openai_other_prompts(base, key, prompt, image_path):
    """This prompt through endpoints warden does not interpret: an image (JSON), an image edit (multipart), a
    moderation and speech (each without a model). What each got: 200, or the status and message."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    return outcomes({
        "image": lambda: client.images.generate(prompt=prompt),
        "edit": lambda: client.images.edit(image=open(image_path, "rb"), prompt=prompt),
        "moderation": lambda: client.moderations.create(input=prompt),
        "speech": lambda: client.audio.speech.create(model="gpt-4o-mini", voice="alloy", input=prompt).read(),
    })


def openai_completions(base, key, prompt):
    """A legacy completion with this prompt, whole and streamed: the texts, the streamed chunks, or the refusal."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    try:
        whole = client.completions.create(model="gpt-4o-mini", prompt=prompt, max_tokens=200)
        chunks = [
            chunk.choices[0].text
            for chunk in client.completions.create(model="gpt-4o-mini", prompt=prompt, max_tokens=200, stream=True)
            if chunk.choices
        ]
        return {"text": whole.choices[0].text, "streamed": "".join(chunks), "chunks": chunks, "refused": None}
    except openai.APIStatusError as error:
        return {"refused": refusal(error)}


def openai_input_tokens(base, key, prompt, model="gpt-4o-mini"):
    """Counts a prompt's tokens (responses.input_tokens.count): the count, or the refusal."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    try:
        counted = client.responses.input_tokens.count(model=model, input=prompt, instructions="Be brief.")
        return {"input_tokens": counted.input_tokens, "refused": None}
    except openai.APIStatusError as error:
        return {"refused": refusal(error)}


def anthropic_count_tokens(base, key, prompt, model="claude-haiku-4-5"):
    """Counts a prompt's tokens (messages.count_tokens): the count, or the refusal."""
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    try:
        counted = client.messages.count_tokens(
            model=model, system="Be brief.", messages=[{"role": "user", "content": prompt}]
        )
        return {"input_tokens": counted.input_tokens, "refused": None}
    except anthropic.APIStatusError as error:
        return {"refused": refusal(error)}


def anthropic_batch(base, key, models_and_prompts):
    """Creates a message batch (messages.batches.create), one request per "model|prompt" of the comma-separated
    list: the batch's id and status, or the refusal."""
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    requests = []
    for index, pair in enumerate(models_and_prompts.split(",")):
        model, prompt = pair.split("|", 1)
        params = {"model": model, "max_tokens": 1000, "messages": [{"role": "user", "content": prompt}]}
        requests.append({"custom_id": f"r{index}", "params": params})
    try:
        batch = client.messages.batches.create(requests=requests)
        return {"id": batch.id, "status": batch.processing_status, "refused": None}
    except anthropic.APIStatusError as error:
        return {"refused": refusal(error)}


def anthropic_batch_results(base, key, batch_id):
    """Retrieves a message batch and its results (messages.batches.results, which follows the batch's
    results_url): its status, the URL, and each result's custom id and text."""
    client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
    batch = client.messages.batches.retrieve(batch_id)
    results = [
        [result.custom_id, "".join(block.text for block in result.result.message.content if block.type == "text")]
        for result in client.messages.batches.results(batch_id)
    ]
    return {"status": batch.processing_status, "results_url": batch.results_url, "results": results}


def openai_batch_create(base, key, input_file_id):
    """Creates a batch from an uploaded input file (batches.create): its id, or the refusal."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    try:
        batch = client.batches.create(
            input_file_id=input_file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        return {"id": batch.id, "refused": None}
    except openai.APIStatusError as error:
        return {"refused": refusal(error)}


def openai_batch_run(base, key, path):
    """Uploads a batch's input file (files.create, purpose "batch") and creates a batch of chat completions from it
    (batches.create): the batch's id, or the refusal."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    try:
        with open(path, "rb") as file:
            uploaded = client.files.create(file=file, purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        return {"id": batch.id, "refused": None}
    except openai.APIStatusError as error:
        return {"refused": refusal(error)}


def openai_batch_output(base, key, batch_id):
    """Retrieves a batch (batches.retrieve) and reads its output file (files.content): its status, the file's id,
    and each line of the file parsed as JSON."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    batch = client.batches.retrieve(batch_id)
    text = client.files.content(batch.output_file_id).text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {"status": batch.status, "output_file_id": batch.output_file_id, "lines": lines}


SCENARIOS = {
    "openai-chat": openai_chat,
    "openai-chat-cut": openai_chat_cut,
    "openai-responses": openai_responses,
    "anthropic-messages": anthropic_messages,
    "openai-model": openai_model,
    "openai-prompt": openai_prompt,
    "openai-until-refused": openai_until_refused,
    "openai-file-upload": openai_file_upload,
    "openai-other-models": openai_other_models,
    "openai-other-prompts": openai_other_prompts,
    "openai-upload-start": openai_upload_start,
    "openai-completions": openai_completions,
    "anthropic-prompt": anthropic_prompt,
    "openai-input-tokens": openai_input_tokens,
    "anthropic-count-tokens": anthropic_count_tokens,
    "anthropic-batch": anthropic_batch,
    "anthropic-batch-results": anthropic_batch_results,
    "openai-batch-create": openai_batch_create,
    "openai-batch-run": openai_batch_run,
    "openai-batch-output": openai_batch_output,
}

def run(scenario, base, key, *args):
    try:
        return SCENARIOS[scenario](base, key, *args)
    except openai.APIStatusError as error:
        return {"unexpected_refusal": refusal(error)}
    except anthropic.APIStatusError as error:
        return {"unexpected_refusal": refusal(error)}


if __name__ == "__main__":
    if sys.argv[1] == "batch":
        # One interpreter for several steps (importing the SDKs is most of a step's time): argv[2] is a JSON list of
        # [scenario, base, key, args...]; the output, a list of their results in order.
        print(json.dumps([run(*step) for step in json.loads(sys.argv[2])]))
    else:
        print(json.dumps(run(*sys.argv[1:])))
