from rest_framework import status as http

from config.api import ServiceError


class BudgetExceeded(ServiceError):
    code = "token_limit_exceeded"
    status = http.HTTP_403_FORBIDDEN
    default_message = "Your monthly token budget is spent."
