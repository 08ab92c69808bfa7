"""What compose hands the container: every variable it passes through, empty when the user set
none (``VAR: ${VAR:-}``). The shipped graphs and nodes must then behave as if it were unset."""

from __future__ import annotations

import pytest
from harness import run_graph
from test_deploy import COMPOSE, compose_config

from flowvoice.graph.spec import load_graph

pytestmark = pytest.mark.anyio


def passed_through() -> dict[str, str]:
    """The flowvoice service's environment as compose resolves it with nothing set."""
    return {
        k: "" if v is None else str(v)
        for k, v in compose_config(COMPOSE)["services"]["flowvoice"]["environment"].items()
    }


@pytest.mark.parametrize("graph", ["ollama_kokoro", "openai_coqui", "shared_llm"])
def test_empty_variables_give_the_graph_defaults(graph, monkeypatch) -> None:
    env = passed_through()
    assert env["WHISPER_COMPUTE_TYPE"] == "" and env["OPENAI_BASE_URL"] == ""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OLLAMA_MODEL", "qwen3:4b")
    nodes = {name: node.params for name, node in load_graph(graph).nodes.items()}
    if graph == "shared_llm":  # LLM_MODEL unset: the model Ollama pulled
        assert nodes["llm"].model == "qwen3:4b"
        return
    assert nodes["stt"].device == "auto" and nodes["stt"].compute_type == "default"
    if graph == "openai_coqui":
        assert nodes["llm"].model == "gpt-4o-mini"
        assert (nodes["tts"].voice, nodes["tts"].language, nodes["tts"].device) == (
            "",
            "en",
            "auto",
        )


async def test_an_empty_openai_base_url_means_openai(monkeypatch, own_resources) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    result = await run_graph(
        {"llm": ("llm.openai", {"check_model": False})}, [], [], ["llm.prompt"]
    )
    assert result.session.nodes["llm"].base_url == "https://api.openai.com/v1"
