"""A test agent (ResponsesAgent, models-from-code) driven by the text of the last user message:

"raise"          raises ValueError (the client must get a JSON error, no stack)
"probe <json>"   tries to read each path of the JSON list and reports what it could read
"whoami"         uid, gid, cwd and the environment's names
"token"          agentdeploy.runtime.workspace_token()
"sleep <s>"      sleeps, then answers
anything else    echoed back, inside a traced child span
"""

from __future__ import annotations

import json
import os
import time

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse


def _try_read(path: str) -> str:
    try:
        if os.path.isdir(path):
            os.listdir(path)
            return "readable"
        with open(path, "rb") as f:
            f.read(16)
        return "readable"
    except FileNotFoundError:
        return "missing"
    except PermissionError:
        return "denied"
    except OSError as exc:
        return f"error {exc.errno}"


class Probe(ResponsesAgent):
    def _answer(self, request: ResponsesAgentRequest) -> tuple[str, dict]:
        text = ""
        for item in request.input:
            data = item.model_dump()
            if data.get("role") == "user":
                content = data.get("content")
                text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
        command, _, arg = text.partition(" ")
        custom = {}
        if command == "raise":
            raise ValueError("boom from the probe agent")
        if command == "probe":
            custom = {path: _try_read(path) for path in json.loads(arg)}
        elif command == "whoami":
            custom = {
                "uid": os.getuid(),
                "gid": os.getgid(),
                "groups": os.getgroups(),
                "cwd": os.getcwd(),
                "env": sorted(os.environ),
            }
        elif command == "token":
            from agentdeploy.runtime import workspace_host, workspace_token

            custom = {"token": workspace_token(), "host": workspace_host()}
        elif command == "sleep":
            time.sleep(float(arg))
        with mlflow.start_span(name="echo", span_type="TOOL") as span:
            span.set_inputs({"text": text})
            span.set_outputs({"text": text})
        return f"echo: {text}", custom

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        text, custom = self._answer(request)
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(text=text, id="msg_1")], custom_outputs=custom
        )

    def predict_stream(self, request):
        text, _ = self._answer(request)
        for i, word in enumerate(text.split(" ")):
            yield {
                "type": "response.output_text.delta",
                "item_id": "msg_1",
                "delta": (" " if i else "") + word,
            }
        yield {
            "type": "response.output_item.done",
            "item": self.create_text_output_item(text=text, id="msg_1"),
        }


mlflow.models.set_model(Probe())
