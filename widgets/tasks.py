"""The task tree: parent links, status and owner; selecting a task (arrows or a click)
shows its body and result, capped, what it changed on disk (and its undos), and its
steps and tool calls, drawn only when their section is opened (which the app loads and
hands back)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Collapsible, Static, Tree

from agents.protocol import Task
from agents.safe_text import safe_text

STATUS_GLYPHS = {"queued": "○", "active": "▶", "waiting_approval": "⏸", "blocked": "⧗", "done": "✔",
                 "failed": "✖", "deferred": "↷", "cancelled": "⊘"}


def task_label(task: Task) -> Text:
    glyph = STATUS_GLYPHS.get(task.status, "?")
    return Text(safe_text(f"{glyph} #{task.id} {task.status} {task.owner or '-'}: {task.title}"))


class TaskView(Horizontal):
    class Selected(Message):
        def __init__(self, task_id: int) -> None:
            super().__init__()
            self.task_id = task_id

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._shape: tuple[object, ...] = ()
        self._steps: list[str] = []  # the selected task's steps, drawn when their section opens
        self._changes: list[str] = []

    def compose(self) -> ComposeResult:
        tree: Tree[int] = Tree("tasks", id="task-tree")
        tree.show_root = False
        yield tree
        with VerticalScroll(id="task-detail"):
            yield Static("select a task to see its body, result, steps and tool calls", id="task-detail-text")
            yield Static("", id="task-changes-text")
            with Collapsible(title="steps and tool calls", collapsed=True, id="task-steps"):
                yield Static("", id="task-steps-text")

    def on_mount(self) -> None:
        self.query_one("#task-steps", Collapsible).display = False
        self.query_one("#task-changes-text", Static).display = False

    def show(self, tasks: list[Task]) -> None:
        """Rebuild the tree only when something in it changed."""
        shape = tuple((t.id, t.parent_id, t.status, t.owner, t.title) for t in tasks)
        if shape == self._shape:
            return
        self._shape = shape
        tree = self.query_one("#task-tree", Tree)
        selected = tree.cursor_node.data if tree.cursor_node is not None else None
        tree.clear()
        nodes = {}
        children: dict[int | None, list[Task]] = {}
        for task in tasks:
            parent = task.parent_id if task.parent_id in {t.id for t in tasks} else None
            children.setdefault(parent, []).append(task)
        stack = [(tree.root, t) for t in reversed(children.get(None, []))]
        while stack:  # iterative: a deep tree from an old database must not hit the recursion limit
            parent_node, task = stack.pop()
            kids = children.get(task.id, [])
            node = parent_node.add(task_label(task), data=task.id, expand=True, allow_expand=bool(kids))
            nodes[task.id] = node
            stack += [(node, kid) for kid in reversed(kids)]
        if selected in nodes:
            tree.move_cursor(nodes[selected])

    def show_detail(self, text: str, steps: list[str]) -> None:
        self.query_one("#task-detail-text", Static).update(Text(safe_text(text, keep_newlines=True)))
        self._steps = steps
        section = self.query_one("#task-steps", Collapsible)
        section.display = bool(steps)
        self._draw_steps()

    def show_changes(self, lines: list[str]) -> None:
        """What the selected task changed on disk (none: the section is hidden); redrawn
        only when the lines differ."""
        if lines == self._changes:
            return
        self._changes = lines
        changes = self.query_one("#task-changes-text", Static)
        changes.display = bool(lines)
        text = "\n".join(["", "changes:", *(safe_text(line) for line in lines)]) if lines else ""
        changes.update(Text(text))

    @property
    def change_text(self) -> str:
        """The changes section as shown (tests read it)."""
        return "\n".join(self._changes)

    def _draw_steps(self) -> None:
        section = self.query_one("#task-steps", Collapsible)
        text = "\n".join(safe_text(line) for line in self._steps) if not section.collapsed else ""
        self.query_one("#task-steps-text", Static).update(Text(text))

    def on_collapsible_expanded(self, event: Collapsible.Expanded) -> None:
        event.stop()
        self._draw_steps()

    def on_tree_node_selected(self, event: Tree.NodeSelected[int]) -> None:
        if event.node.data is not None:  # Enter on a task: the same as highlighting it
            self.post_message(self.Selected(event.node.data))

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[int]) -> None:
        if event.node.data is not None:
            self.post_message(self.Selected(event.node.data))
