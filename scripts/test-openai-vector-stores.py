"""The official `openai` Python client, unchanged, against a real bkg host's /v1 (llmserver
forwarding to brainml): upload real text files, make a vector store, add them, search, and
get the file that answers first; bad inputs give the client's own error classes with
OpenAI's error shape. Run by scripts/test-openai.sh:

    python3 scripts/test-openai-vector-stores.py BASE_URL   (the key in $BKG_KEY)
"""

import os
import sys

import openai
from openai import OpenAI

LICENSES = "/usr/share/common-licenses"


def error_shape(e: openai.APIStatusError) -> dict:
    """The error object of an OpenAI error answer, checked for OpenAI's four keys."""
    body = e.response.json()
    error = body.get("error")
    assert isinstance(error, dict), body
    for key in ("message", "type", "param", "code"):
        assert key in error, (key, body)
    assert isinstance(error["message"], str) and error["message"], body
    return error


def main() -> None:
    base = sys.argv[1].rstrip("/")
    client = OpenAI(base_url=base + "/v1", api_key=os.environ["BKG_KEY"], max_retries=0, timeout=300)

    files = {}
    for name in ("Apache-2.0", "MPL-2.0", "BSD"):
        path = os.path.join(LICENSES, name)
        with open(path, "rb") as fh:
            f = client.files.create(file=fh, purpose="assistants")
        assert f.object == "file" and f.filename == name, f
        assert f.bytes == os.path.getsize(path), f
        assert f.id.startswith("file-"), f
        files[name] = f.id
    listed = {f.id for f in client.files.list()}
    assert set(files.values()) <= listed, (files, listed)
    assert client.files.retrieve(files["BSD"]).filename == "BSD"
    with open(os.path.join(LICENSES, "BSD"), encoding="utf-8") as fh:
        assert client.files.content(files["BSD"]).text == fh.read()

    vs = client.vector_stores.create(name="licenses", metadata={"suite": "openai-client"})
    assert vs.object == "vector_store" and vs.name == "licenses" and vs.status == "completed", vs
    assert vs.id.startswith("vs_"), vs
    for name, file_id in files.items():
        vf = client.vector_stores.files.create_and_poll(vector_store_id=vs.id, file_id=file_id)
        assert vf.object == "vector_store.file" and vf.status == "completed", vf
        assert vf.vector_store_id == vs.id, vf
    vs = client.vector_stores.retrieve(vs.id)
    assert vs.file_counts.completed == 3 and vs.file_counts.total == 3, vs
    assert vs.usage_bytes == sum(os.path.getsize(os.path.join(LICENSES, n)) for n in files), vs
    assert vs.id in {v.id for v in client.vector_stores.list()}
    assert {f.id for f in client.vector_stores.files.list(vector_store_id=vs.id)} == set(files.values())

    for query, want in (
        ("Must I include the NOTICE text file when I redistribute the Work?", "Apache-2.0"),
        ("What happens to the license of Covered Software in Executable Form?", "MPL-2.0"),
    ):
        results = list(client.vector_stores.search(vector_store_id=vs.id, query=query, max_num_results=5))
        assert results, query
        first = results[0]
        assert first.file_id == files[want] and first.filename == want, (query, first)
        assert first.content and first.content[0].type == "text" and first.content[0].text, first
        print(f"search {query!r}: {first.filename} first (score {first.score:.3f})")

    # Bad inputs: the client's own error classes, OpenAI's error shape.
    try:
        client.vector_stores.retrieve("vs_doesnotexist")
        raise AssertionError("an unknown vector store was found")
    except openai.NotFoundError as e:
        assert e.status_code == 404
        assert "vs_doesnotexist" in error_shape(e)["message"]
    try:
        client.vector_stores.search(vector_store_id="vs_doesnotexist", query="x")
        raise AssertionError("an unknown vector store was searched")
    except openai.NotFoundError as e:
        error_shape(e)
    try:
        client.files.create(file=("blob.bin", bytes(range(256)) * 16), purpose="assistants")
        raise AssertionError("a binary file was taken")
    except openai.BadRequestError as e:
        error = error_shape(e)
        assert error["param"] == "file" and "text file" in error["message"], error

    assert client.vector_stores.delete(vs.id).deleted
    for file_id in files.values():
        assert client.files.delete(file_id).deleted
    try:
        client.vector_stores.retrieve(vs.id)
        raise AssertionError("a deleted vector store was found")
    except openai.NotFoundError:
        pass
    print(f"openai {openai.__version__}: vector stores and files OK")


if __name__ == "__main__":
    main()
