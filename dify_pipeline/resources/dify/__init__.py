"""The Dify Service API client: the resource, its wire protocol, error classes, request gate and backoff policy.

Layers point one way: this package imports nothing from the step folders (extract/, clean/, infer/, ...).
"""

from dify_pipeline.resources.dify.errors import DifyCallError, FailureBreaker
from dify_pipeline.resources.dify.gate import RequestGate
from dify_pipeline.resources.dify.protocol import DifyRequest, DifyResult
from dify_pipeline.resources.dify.resource import DifyFatalError, DifyResource
from dify_pipeline.resources.dify.versions import AnswerDecision, decide_cached_answer

__all__ = ["AnswerDecision", "DifyCallError", "DifyFatalError", "DifyRequest", "DifyResource", "DifyResult",
           "FailureBreaker", "RequestGate", "decide_cached_answer"]
