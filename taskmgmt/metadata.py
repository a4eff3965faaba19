"""What OPTIONS answers (DRF's DEFAULT_METADATA_CLASS; its own module, as DRF imports it
while loading its views)."""

from rest_framework.metadata import BaseMetadata


class AllowedMethodsMetadata(BaseMetadata):
    """OPTIONS answers what `Allow` lists: the methods, and nothing else.

    DRF's SimpleMetadata also describes the serializers, calling get_object() and
    get_serializer() outside the view's own flow (a 500 where no queryset is set).
    """

    def determine_metadata(self, request, view):
        return {"methods": view.allowed_methods}
