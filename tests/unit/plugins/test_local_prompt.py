"""What the local chat model is shown: the character and the conversation as turns."""

from __future__ import annotations

from shared.agent.prompts import MESSAGE_HANDLER, compose_prompt
from shared.plugins.local import conversation_messages

PROVIDERS = """# About Eliza
A friendly assistant.

# Available actions
- REPLY: answer

# Conversation
ada: Hi
Eliza: Hello Ada!
ada: What is the capital of France?
ada: (and of Italy?)"""


def test_the_planning_prompt_becomes_a_chat_with_the_conversation_as_turns() -> None:
    prompt = compose_prompt(MESSAGE_HANDLER, {"agentName": "Eliza", "providers": PROVIDERS})
    messages = conversation_messages(prompt, "Eliza", "Be brief.")
    assert messages[0] == {
        "role": "system",
        "content": "Be brief.\n# About Eliza\nA friendly assistant.",
    }
    assert messages[1:] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello Ada!"},
        {"role": "user", "content": "What is the capital of France?\n(and of Italy?)"},
    ]
    assert all("REPLY" not in m["content"] and "<response>" not in m["content"] for m in messages)


def test_a_conversation_that_ends_with_the_agent_gets_a_nudge() -> None:
    messages = conversation_messages(
        "<providers># Conversation\nEliza: hi</providers>", "Eliza", ""
    )
    assert messages == [
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "Go on."},
    ]
