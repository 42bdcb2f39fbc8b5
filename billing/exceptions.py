from rest_framework import status as http

from config.api import ServiceError


class BudgetExceeded(ServiceError):
    code = "token_limit_exceeded"
    status = http.HTTP_403_FORBIDDEN
    default_message = "Your monthly token budget is spent."


class LimitBelowUsed(ServiceError):
    code = "limit_below_used"
    status = http.HTTP_400_BAD_REQUEST
    default_message = "The new limit is below what the user has already used this month."


class InvalidLimit(ServiceError):
    code = "validation_error"
    status = http.HTTP_400_BAD_REQUEST
    default_message = "A monthly token limit is a whole number, 0 or more."
