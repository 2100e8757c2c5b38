"""Chat templates: an allowlist over the parsed Jinja AST (issue 10, section 1, "Chat templates").

Real-world templates (Llama 3.1, Mistral, ChatML/Qwen 2.5 and 3, Gemma 2/3, Phi-3, DeepSeek,
a Hermes-style macro template, transformers' ``{% generation %}`` form) pass at every tier.
Every construct outside the allowlist - above all a subscript whose key is computed, which
reaches Python internals through Jinja's getitem -> getattr fallback - flags at low/medium and
blocks at high/critical; naming Python internals outright blocks at every tier.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import jinja2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from airlock.scan import scan_model
from airlock.scan.template_scan import review_template
from scan_corpus import gguf_bytes, write

TIERS = ("low", "medium", "high", "critical")

# --------------------------------------------------------------------------- real templates

LLAMA_3_1 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

MISTRAL_V03_TOOLS = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

QWEN_2_5 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

QWEN_3 = """{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}
"""

GEMMA_2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

GEMMA_3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

PHI_3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

DEEPSEEK_R1 = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{%- if ns.is_first_sp %}"
    "{% set ns.system_prompt = ns.system_prompt + message['content'] %}{% set ns.is_first_sp = false %}{%- else %}"
    "{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and 'tool_calls' in message %}{%- set ns.is_tool = false -%}"
    "{%- for tool in message['tool_calls'] %}{%- if not ns.is_first %}{%- if message['content'] is none %}"
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name']"
    " + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- else %}"
    "{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>'"
    " + tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```'"
    " + '<｜tool▁call▁end｜>'}}{%- endif %}{%- set ns.is_first = true -%}{%- else %}"
    "{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json'"
    " + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}{%- endif %}{%- endfor %}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and 'tool_calls' not in message %}{%- if ns.is_tool %}"
    "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}"
    "{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}{%- else %}{{'<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)

# transformers' docs: assistant-token masks via {% generation %}; macros as Llama 4 / Granite use them.
GENERATION_AND_MACRO = """{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content | trim -}}
    {%- else -%}
        {%- for item in content | selectattr("type", "equalto", "text") -%}
            {{- item.text | trim -}}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- for message in messages %}
    {%- if message['role'] == 'assistant' %}
        {{- '<|assistant|>\\n' }}
        {%- generation %}
        {{- render_content(message['content']) + eos_token }}
        {%- endgeneration %}
    {%- else %}
        {{- '<|' + message['role'] + '|>\\n' + render_content(message['content']) + eos_token }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}
{%- for i in range(3) %}{{ stops[i] if stops is defined else '' }}{%- endfor %}
{%- for key in ['name', 'description'] %}{{ tools[0][key] if tools else '' }}{%- endfor %}
{{- strftime_now("%d %b %Y") }}
"""

REAL_TEMPLATES = {
    "llama-3.1": LLAMA_3_1,
    "mistral-v0.1": MISTRAL_V01,
    "mistral-v0.3-tools": MISTRAL_V03_TOOLS,
    "chatml": CHATML,
    "qwen-2.5": QWEN_2_5,
    "qwen-3": QWEN_3,
    "gemma-2": GEMMA_2,
    "gemma-3": GEMMA_3,
    "phi-3": PHI_3,
    "deepseek-r1": DEEPSEEK_R1,
    "generation-and-macro": GENERATION_AND_MACRO,
}


def rules(report, *actions: str) -> set[str]:
    return {f.rule for _, f in report.findings(*actions)}


def _tokenizer_config(tmp_path: Path, template: object, tier: str) -> object:
    path = write(tmp_path / tier, "tokenizer_config.json", json.dumps({"chat_template": template}))
    return scan_model(path, tier)


@pytest.mark.parametrize("name", sorted(REAL_TEMPLATES))
def test_real_templates_pass_at_every_tier(tmp_path: Path, name: str) -> None:
    template = REAL_TEMPLATES[name]
    assert review_template(template).internals == [] and review_template(template).not_allowlisted == []
    for tier in TIERS:
        report = _tokenizer_config(tmp_path, template, tier)
        assert report.verdict == "allow" and not report.findings(), (name, tier, report.summary_lines())
    gguf = write(tmp_path / "gguf", "model.gguf", gguf_bytes({"tokenizer.chat_template": template}))
    assert scan_model(gguf, "critical").verdict == "allow"


def test_named_template_list_and_dict_forms_are_all_checked(tmp_path: Path) -> None:
    """transformers accepts a list of {name, template} and (kept as such) a dict name -> template."""
    bad = "{% set k = key %}{{ messages[k] }}"
    as_list = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": bad}]
    as_dict = {"default": CHATML, "tool_use": bad}
    for form in (as_list, as_dict):
        assert "template.not_allowlisted" in rules(_tokenizer_config(tmp_path, form, "high"), "block")
        assert rules(_tokenizer_config(tmp_path, form, "low"), "flag") == {"template.not_allowlisted"}


# --------------------------------------------------------------------------- bypasses

# Constructs outside the allowlist that do not name Python internals outright: flag at low and
# medium, block at high and critical.
OUTSIDE_ALLOWLIST = {
    "variable key": "{% set u = '_' %}{% set k = u ~ u ~ 'class' ~ u ~ u %}{{ messages[k] }}",
    "variable key from data": "{% for m in messages %}{{ m[m.role] }}{% endfor %}",
    "key built at render time": "{{ messages[0][messages[1]['content'] ~ 'x'] }}",
    "key from a filter": "{{ x[('%c' % 95)|string] }}",
    "attr filter with a computed name": "{{ x|attr(messages[0].content) }}",
    "map with a computed attribute": "{{ messages|map(attribute=key)|list }}",
    "selectattr with a computed attribute": "{{ messages|selectattr(key, 'defined')|list }}",
    "format filter": "{{ '%s'|format(messages) }}",
    "unknown filter": "{{ messages|pprint }}",
    "unknown call": "{{ messages.pop() }}",
    "call of a computed callee": "{{ messages[0]() }}",
    "unknown global call": "{{ open('/etc/passwd') }}",
    "include": "{% include 'other.jinja' %}",
    "import": "{% import 'macros.jinja' as m %}",
    "from import": "{% from 'macros.jinja' import m %}",
    "extends": "{% extends 'base.jinja' %}",
    "block": "{% block body %}{% endblock %}",
    "call block of a non-macro": "{% call messages.pop() %}x{% endcall %}",
    "power operator": "{{ 10 ** 10 ** 10 }}",
    "star args": "{{ raise_exception(*messages) }}",
    "map applying attr": "{{ messages|map('attr', key)|list }}",
    "select with an unknown test": "{{ messages|select(key)|list }}",
    "key set by a block": "{% set k %}x{% endset %}{{ messages[k] }}",
    # Set somewhere is not set here: read before its set, or outside the loop that set it, a name
    # is whatever the render context holds (servers pass request variables into that context).
    "key read before its set": "{{ messages[index] }}{% set index = 0 %}",
    "key set inside a loop, read after it": "{% for m in messages %}{% set i = 0 %}{% endfor %}{{ messages[i] }}",
    "loop attribute outside a loop": "{{ messages[loop.index0] }}",
    "loop attribute inside a macro": "{% for m in messages %}{% macro f() %}{{ messages[loop.index0] }}{% endmacro %}{% endfor %}",
    "loop variable reassigned": "{% for i in range(3) %}{% set i = key %}{{ messages[i] }}{% endfor %}",
    "allowed function name reassigned": "{% set range = messages.pop %}{{ range(0) }}",
}

# Constructs that name Python internals outright: block at every tier (the pre-existing rule).
PYTHON_INTERNALS = {
    "underscore attribute": "{{ messages.__class__ }}",
    "underscore literal key": "{{ messages['_private'] }}",
    "dunder string": "{% set k = '__class__' %}{{ messages[k] }}",
    "dunder built from literals": "{{ messages['_' ~ '_cla' ~ 'ss_' ~ '_'] }}",
    "escaped dunder": "{{ messages['\\x5f\\x5fclass\\x5f\\x5f'] }}",
    "attr filter with an underscore name": "{{ messages|attr('_x') }}",
    "map with an underscore attribute": "{{ messages|map(attribute='role._x')|list }}",
    "selectattr with an underscore attribute": "{{ messages|selectattr('_x')|list }}",
    "gadget global": "{{ lipsum }}",
    "namespace underscore attribute": "{% set ns = namespace() %}{% set ns._x = 1 %}",
}


@pytest.mark.parametrize("name", sorted(OUTSIDE_ALLOWLIST))
def test_constructs_outside_the_allowlist_flag_low_block_high(tmp_path: Path, name: str) -> None:
    template = OUTSIDE_ALLOWLIST[name]
    jinja2.Environment().parse(template)  # valid Jinja: the finding is the allowlist's, not a syntax error
    review = review_template(template)
    assert review.not_allowlisted and not review.internals, (name, review)
    for tier in ("low", "medium"):
        report = _tokenizer_config(tmp_path, template, tier)
        assert report.verdict == "allow" and rules(report, "flag") == {"template.not_allowlisted"}, name
    for tier in ("high", "critical"):
        report = _tokenizer_config(tmp_path, template, tier)
        assert report.verdict == "block" and "template.not_allowlisted" in rules(report, "block"), name


@pytest.mark.parametrize("name", sorted(PYTHON_INTERNALS))
def test_python_internals_block_at_every_tier(tmp_path: Path, name: str) -> None:
    template = PYTHON_INTERNALS[name]
    assert review_template(template).internals, name
    for tier in TIERS:
        report = _tokenizer_config(tmp_path, template, tier)
        assert report.verdict == "block" and "template.python_internals" in rules(report, "block"), (name, tier)


def test_computed_key_reaches_python_internals_when_rendered_outside_the_sandbox() -> None:
    """The class this allowlist closes: no underscore attribute in the source, yet a plain
    Environment hands out ``__class__`` through getitem's getattr fallback."""
    template = OUTSIDE_ALLOWLIST["variable key"]
    rendered = jinja2.Environment().from_string(template).render(messages=[])
    assert rendered == "<class 'list'>"
    assert review_template(template).not_allowlisted
    # ``loop.index0`` is an integer only inside a loop; elsewhere the render context supplies it.
    template = OUTSIDE_ALLOWLIST["loop attribute outside a loop"]
    rendered = jinja2.Environment().from_string(template).render(messages=[], loop={"index0": "__class__"})
    assert rendered == "<class 'list'>"
    assert review_template(template).not_allowlisted


def test_unparsable_template_blocks_at_every_tier(tmp_path: Path) -> None:
    """Blocks even at low: the loader could not render it, and a renderer with another grammar
    (llama.cpp's minja, another Jinja version) might - so Airlock cannot vouch for it."""
    for tier in TIERS:
        report = _tokenizer_config(tmp_path, "{% for m in messages %}{{ m }}", tier)
        assert "template.unparsable" in rules(report, "block")


def test_gguf_template_bypass_and_duplicate_template_keys(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "a", "model.gguf", gguf_bytes({"tokenizer.chat_template": OUTSIDE_ALLOWLIST["variable key"]})
    )
    assert rules(scan_model(bad, "low"), "flag") == {"template.not_allowlisted"}
    assert "template.not_allowlisted" in rules(scan_model(bad, "high"), "block")
    # Two values for one GGUF key: llama.cpp refuses the file, gguf-py keeps the first, a
    # dict-building reader the last - two readings, so a block at every tier.
    raw = gguf_bytes({"tokenizer.chat_template": CHATML, "general.name": "x"})
    key = b"general.name"
    dup = raw.replace(struct.pack("<Q", len(key)) + key, struct.pack("<Q", 23) + b"tokenizer.chat_template", 1)
    dup = dup[:16] + struct.pack("<Q", 2) + dup[24:]
    path = write(tmp_path / "b", "model.gguf", dup)
    for tier in TIERS:
        assert "gguf.malformed" in rules(scan_model(path, tier), "block")


def test_duplicate_chat_template_keys_are_two_readings(tmp_path: Path) -> None:
    """transformers' json.load keeps the last value; other readers keep the first: block at every tier."""
    raw = '{"chat_template": %s, "model_max_length": 8, "chat_template": %s}' % (
        json.dumps("{{ messages[k] }}"),
        json.dumps(CHATML),
    )
    assert json.loads(raw)["chat_template"] == CHATML  # the loader's reading is the harmless one
    for tier in TIERS:
        report = scan_model(write(tmp_path / tier, "tokenizer_config.json", raw), tier)
        assert report.verdict == "block" and "json.duplicate_key" in rules(report, "block"), tier
    same = '{"chat_template": %s, "chat_template": %s}' % (json.dumps(CHATML), json.dumps(CHATML))
    assert scan_model(write(tmp_path / "same", "tokenizer_config.json", same), "critical").verdict == "allow"
