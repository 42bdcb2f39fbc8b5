from chat.llm.local import LocalProvider


def reply(message, **kwargs):
    stream = LocalProvider().stream_reply(
        system_prompt="s", history=[], message=message, max_output_tokens=2048, **kwargs
    )
    return list(stream), stream.result


def test_streams_several_chunks_with_usage(settings):
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 0
    chunks, result = reply("Design a pixel-art fox collection")
    assert len(chunks) > 1
    assert result.finish_reason == "stop"
    assert result.usage.output_tokens > 0 and result.usage.input_tokens > 0


def test_reply_depends_on_the_message_and_is_deterministic(settings):
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 0
    first = "".join(reply("neon city skyline")[0])
    assert first == "".join(reply("neon city skyline")[0])
    assert first != "".join(reply("watercolour forest spirits")[0])


def test_exact_chunk_count_for_benchmarks(settings):
    settings.LOCAL_LLM_CHUNK_DELAY_MS = 0
    settings.LOCAL_LLM_CHUNKS = 50
    assert len(reply("anything")[0]) == 50
