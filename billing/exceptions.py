from config.api import ServiceError
from config.errors import ErrorCode


class BudgetExceeded(ServiceError):
    code = ErrorCode.TOKEN_LIMIT_EXCEEDED
    default_message = "Your monthly token budget is spent."


class LimitBelowUsed(ServiceError):
    code = ErrorCode.LIMIT_BELOW_USED
    default_message = "The new limit is below what the user has already used this month."


class InvalidLimit(ServiceError):
    code = ErrorCode.VALIDATION_ERROR
    default_message = "A monthly token limit is a whole number, 0 or more."
