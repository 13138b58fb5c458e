from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class StandardPagination(PageNumberPagination):
    """``page`` (from 1) and ``page_size`` (default 50; more than 200 is taken as 200).

    A ``page_size`` that is not a whole number of at least 1 is a 400 (DRF alone would
    quietly use the default); a page past the end, or not a number, is DRF's 404 "Invalid page.".
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or int(raw) < 1:
            raise ValidationError({self.page_size_query_param: ["Must be a whole number of at least 1."]})
        return min(int(raw), self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = f"Results per page: default {self.page_size}, at most {self.max_page_size}."
        return parameters
