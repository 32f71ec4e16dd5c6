"""Prompt templates and how they are filled from the state.

Every template can be replaced per character (``character.templates[name]``).
Placeholders are ``{{name}}``, filled from ``state.values``; a missing value
becomes an empty string rather than a literal ``{{name}}`` in the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{\{\{?\s*([A-Za-z_][\w.]*)\s*\}?\}\}")


def compose_prompt(template: str, values: Mapping[str, object]) -> str:
    """Return ``template`` with every ``{{name}}`` replaced by ``values[name]``."""

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(1), "")
        return value if isinstance(value, str) else str(value)

    return _PLACEHOLDER.sub(fill, template)


SHOULD_RESPOND = """\
<task>Decide on behalf of {{agentName}} whether they should respond to the message, \
ignore it or stop the conversation.</task>

<providers>
{{providers}}
</providers>

<instructions>
Respond with RESPOND if {{agentName}} is addressed, asked something, or can add to the
conversation. IGNORE if the message is not for them or needs no answer. STOP if asked to stop.
</instructions>

<output>
Respond using XML format like this:
<response>
  <name>{{agentName}}</name>
  <reasoning>Your reasoning here</reasoning>
  <action>RESPOND | IGNORE | STOP</action>
</response>
</output>"""

MESSAGE_HANDLER = """\
<task>Generate dialog and actions for the character {{agentName}}.</task>

<providers>
{{providers}}
</providers>

<instructions>
Write a thought and plan for {{agentName}} and decide what actions to take.
Choose actions from: {{actionNames}}.
Use REPLY to answer with text; IGNORE to say nothing. If several actions are needed, list them
in the order they should run. List in <providers> only providers that are needed beyond the
ones already shown, or leave it empty.
</instructions>

<output>
Respond using XML format like this:
<response>
  <thought>Your thought here</thought>
  <actions>ACTION1,ACTION2</actions>
  <providers>PROVIDER1,PROVIDER2</providers>
  <text>Your response text here</text>
</response>
</output>"""

REPLY = """\
<task>Generate the next reply of {{agentName}} in the conversation.</task>

<providers>
{{providers}}
</providers>

<output>
Respond using XML format like this:
<response>
  <thought>Your thought here</thought>
  <text>Your message here</text>
</response>
</output>"""

REFLECTION = """\
<task>Extract facts and relationships from the recent conversation of {{agentName}}.</task>

<providers>
{{providers}}
</providers>

<instructions>
List new facts about the people in the conversation that are not already known, and the
relationships between them. Known facts:
{{knownFacts}}
</instructions>

<output>
Respond using XML format like this:
<response>
  <thought>a short reflection</thought>
  <facts><fact><claim>a fact</claim><type>fact|opinion|status</type></fact></facts>
  <relationships><relationship><sourceEntityId>id</sourceEntityId>\
<targetEntityId>id</targetEntityId><tags>friend,colleague</tags></relationship></relationships>
</response>
</output>"""

MULTI_STEP_DECISION = """\
<task>Decide the next step for {{agentName}} \
(step {{iteration}} of at most {{maxIterations}}).</task>

<providers>
{{providers}}
</providers>

<instructions>
Pick at most one action from: {{actionNames}}, with its parameters as a JSON object, and
any providers whose information you need first. Set isFinish to true when the task is done.
</instructions>

<output>
Respond using XML format like this:
<response>
  <thought>what to do next and why</thought>
  <providers>PROVIDER1,PROVIDER2</providers>
  <action>ACTION</action>
  <parameters>{"name": "value"}</parameters>
  <isFinish>false</isFinish>
</response>
</output>"""

MULTI_STEP_SUMMARY = """\
<task>Write the final answer of {{agentName}} from the steps taken.</task>

<providers>
{{providers}}
</providers>

<output>
Respond using XML format like this:
<response>
  <thought>a short summary of what was done</thought>
  <text>the answer to send</text>
</response>
</output>"""

TEMPLATES: dict[str, str] = {
    "shouldRespondTemplate": SHOULD_RESPOND,
    "messageHandlerTemplate": MESSAGE_HANDLER,
    "replyTemplate": REPLY,
    "reflectionTemplate": REFLECTION,
    "multiStepDecisionTemplate": MULTI_STEP_DECISION,
    "multiStepSummaryTemplate": MULTI_STEP_SUMMARY,
}
"""The default templates by the name a character uses to replace them."""
