"""What the model is asked to do: one module per task, each a :class:`~prunekit.tasks.base.Task`.

Adding a task is one module and one line in :data:`TASKS` (see docs/guides/adding-a-task.md).
"""

from __future__ import annotations

from prunekit.errors import PrunekitError
from prunekit.tasks.base import Task
from prunekit.tasks.classification import ClassificationTask
from prunekit.tasks.embedding import EmbeddingTask
from prunekit.tasks.lm import LMTask
from prunekit.tasks.question_answering import QuestionAnsweringTask
from prunekit.tasks.regression import RegressionTask
from prunekit.tasks.token_classification import TokenClassificationTask

#: Every task the loop runs, by its ``--task`` name.
TASKS: dict[str, Task] = {
    ClassificationTask.name: ClassificationTask(),
    RegressionTask.name: RegressionTask(),
    LMTask.name: LMTask(),
    TokenClassificationTask.name: TokenClassificationTask(),
    QuestionAnsweringTask.name: QuestionAnsweringTask(),
    EmbeddingTask.name: EmbeddingTask(),
}


def get_task(task: str | Task) -> Task:
    """The task named ``task`` (a :class:`Task` is returned as it is); an unknown name is refused."""
    if isinstance(task, Task):
        return task
    if task not in TASKS:
        raise PrunekitError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[task]


__all__ = ["TASKS", "Task", "get_task"]
