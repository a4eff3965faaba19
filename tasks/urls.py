"""The original system's task paths, mounted at `api/` (slash-optional: taskmgmt.urls).

Fixed words (`all`, `node`, `assign`, ...) come before `<taskId>`, which
would otherwise capture them.
"""

from django.urls import path

from tasks.views import TaskViewSet

tasks = TaskViewSet.as_view

urlpatterns = [
    path("tasks", tasks({"get": "list", "post": "create", "put": "update"}), name="task-list"),
    path("tasks/bulk", tasks({"post": "bulk"}), name="task-bulk"),
    path("tasks/broadcast", tasks({"post": "broadcast"}), name="task-broadcast"),
    path("tasks/all", tasks({"get": "list_all"}), name="task-all"),
    path("tasks/node", tasks({"get": "list"}), name="task-node"),
    path("tasks/filter/<str:status>", tasks({"get": "list_by_status"}), name="task-filter"),
    path("tasks/assign", tasks({"put": "assign"}), name="task-assign"),
    path("tasks/shift-status", tasks({"put": "shift_status"}), name="task-shift-status"),
    path("tasks/progress", tasks({"put": "progress"}), name="task-progress"),
    path("tasks/claim", tasks({"post": "claim"}), name="task-claim"),
    path("tasks/<str:taskId>/cancel", tasks({"post": "cancel"}), name="task-cancel"),
    path("tasks/history/<str:taskId>", tasks({"get": "history"}), name="task-history"),
    path("tasks/<str:taskId>", tasks({"get": "retrieve", "delete": "destroy"}), name="task-detail"),
]
