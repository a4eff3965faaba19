"""The base of the apps' domain errors: a broken rule that knows its HTTP answer.

Services raise subclasses (tasks.models.TaskRuleError); taskmgmt.api turns any of
them into the API's error format without knowing the apps.
"""


class DomainError(Exception):
    status_code = 400
    title = "Bad Request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
