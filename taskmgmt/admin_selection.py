"""A list action's selected ids, checked before Django reads them.

Django's `ModelAdmin.response_action` filters the list by the posted
`_selected_action` values as they are: one that is no UUID (a hand-made or damaged
POST; the page's own checkboxes never send one) raised ValidationError out of the
query, a 500. Here it is a 400 that says so, and nothing is done."""

from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.http import HttpResponseBadRequest


class CheckedSelectionMixin:
    """For a ModelAdmin whose primary key is not an integer (every one here is a UUID)."""

    def response_action(self, request, queryset):
        pk = self.model._meta.pk
        for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            try:
                pk.to_python(value)
            except ValidationError:
                return HttpResponseBadRequest(
                    f"Nothing was done: a selected {self.model._meta.verbose_name} id is not "
                    "a valid id.",
                    content_type="text/plain; charset=utf-8",
                )
        return super().response_action(request, queryset)
