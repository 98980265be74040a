"""The terminal dashboard (textual) over the job service, through the Python client.

It shows the caller's jobs in a live table (id, phase, model, owner, age, progress), refreshed
every few seconds in a worker thread (the client is blocking), the detail of the selected job
(parameters, error, results), the model list, and the service's queue and batch metrics read
from ``/metrics``. It speaks only the public API (`cianna_otf_server.client.Client`), so it works
against the standalone server and the Jupyter extension alike, and it needs no mouse: it runs in
a plain terminal over SSH.

Keys: arrows move in the table; ``f`` cycles the phase filter, ``/`` types one (``queued,exec``,
case-insensitive prefixes, empty for all); ``a`` aborts and ``d`` deletes the selected job
(after a ``y``/``n`` confirmation); ``m`` shows or hides the models; ``r`` refreshes now;
``q`` quits. Errors (service unreachable, refused token) show in the status line and as a
notification, never as a traceback.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Static

if TYPE_CHECKING:
    from ..client import Client, Job

#: The phases ``f`` cycles through (None: all jobs).
FILTER_CYCLE: tuple[str | None, ...] = (None, "PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED")
#: At most this many of the most recent jobs are listed.
MAX_JOBS = 200
#: Columns of the job table: (key, label).
COLUMNS: tuple[tuple[str, str], ...] = (("job", "job"), ("phase", "phase"), ("model", "model"),
                                         ("owner", "owner"), ("age", "age"), ("progress", "progress"))
#: Phases a job never leaves by itself: their documents are fetched once, then cached.
_STABLE = frozenset({"COMPLETED", "ERROR", "ABORTED", "ARCHIVED"})


# -- formatting ------------------------------------------------------------------------------
def format_age(created: datetime | None, now: datetime | None = None) -> str:
    """A short age: ``42s``, ``7m``, ``3h``, ``2d`` (``-`` when unknown)."""
    if created is None:
        return "-"
    now = now or datetime.now(timezone.utc)
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def format_progress(job: Job) -> str:
    done, total = job.progress
    return f"{done}/{total}" if total else "-"


def job_row(job: Job) -> tuple[str, ...]:
    """The table cells of one job."""
    return (job.job_id, job.phase, job.parameters.get("MODEL", "") or "-", job.owner or "-",
            format_age(job.creation_time), format_progress(job))


def job_detail(job: Job) -> str:
    """The detail pane of one job: the `cianna-otf status` text, plus every parameter and result URL."""
    from ..client import format_job

    lines = [format_job(job)]
    if job.parameters:
        lines.append("")
        lines.append("parameters:")
        lines.extend(f"  {name} = {value}" for name, value in sorted(job.parameters.items()))
    if job.results:
        lines.append("")
        lines.append("results:")
        lines.extend(f"  {result_id}: {job.result_url(result_id)}" for result_id in job.results)
    if job.error_message:
        lines.append("")
        lines.append(f"error: {job.error_message}")
    return "\n".join(lines)


def format_models(models: list[dict[str, Any]]) -> str:
    """The models pane: one line per model card (name, version, family, first sentence)."""
    if not models:
        return "models: none"
    lines = ["models:"]
    for card in models:
        description = str(card.get("description") or "").split(". ")[0].strip()
        if len(description) > 70:
            description = description[:67] + "..."
        state = card.get("status") or card.get("availability") or ""
        head = f"  {card.get('name', '?')} {card.get('version', '')} ({card.get('family', '')})"
        lines.append(f"{head}{' [' + str(state) + ']' if state else ''}  {description}".rstrip())
    return "\n".join(lines)


def parse_metrics(text: str) -> dict[str, Any]:
    """The numbers the footer shows, from a Prometheus exposition text.

    Returns a dict with ``queue`` (patches waiting per model), ``jobs`` (jobs per phase),
    ``batches`` (batches run), ``batch_patches`` (patches in them) and ``patches`` (patches run).
    """
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, Any] = {"queue": {}, "jobs": {}, "batches": 0.0, "batch_patches": 0.0, "patches": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "cianna_otf_queue_patches":
                found["queue"][sample.labels.get("model", "?")] = sample.value
            elif sample.name == "cianna_otf_jobs":
                found["jobs"][sample.labels.get("phase", "?")] = sample.value
            elif sample.name == "cianna_otf_batch_size_count":
                found["batches"] += sample.value
            elif sample.name == "cianna_otf_batch_size_sum":
                found["batch_patches"] += sample.value
            elif sample.name == "cianna_otf_patches_total":
                found["patches"] += sample.value
    return found


def format_metrics(metrics: dict[str, Any]) -> str:
    """One footer line: queue depth per model, jobs per phase, batches and mean batch size."""
    queue = " ".join(f"{model}={int(value)}" for model, value in sorted(metrics["queue"].items())) or "empty"
    jobs = " ".join(f"{phase}={int(value)}" for phase, value in metrics["jobs"].items() if value) or "none"
    batches = int(metrics["batches"])
    mean = f" (mean {metrics['batch_patches'] / batches:.1f} patches)" if batches else ""
    return f"queue: {queue} | jobs: {jobs} | batches: {batches}{mean} | patches run: {int(metrics['patches'])}"


def matches_filter(phase: str, wanted: tuple[str, ...]) -> bool:
    """True when no filter is set or `phase` starts with one of the wanted prefixes."""
    return not wanted or any(phase.startswith(prefix) for prefix in wanted)


def parse_filter(text: str) -> tuple[str, ...]:
    """``"queued, exec"`` -> ``("QUEUED", "EXEC")``; empty or ``all`` -> no filter."""
    parts = tuple(p.strip().upper() for p in text.replace(" ", ",").split(",") if p.strip())
    return () if parts in ((), ("ALL",), ("*",)) else parts


# -- confirmation ----------------------------------------------------------------------------
class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question answered with ``y`` or ``n`` (Escape: no)."""

    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Static { width: auto; max-width: 80; border: thick $warning; padding: 1 2; background: $panel; }
    """
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n", "answer(False)", "no"),
                Binding("escape", "answer(False)", "no", show=False)]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(f"{self.question}  [y/n]", id="question", markup=False)

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


# -- the app ---------------------------------------------------------------------------------
class Dashboard(App[None]):
    """The live dashboard of one service.

    Parameters
    ----------
    client : Client
        The service to watch (its token decides whose jobs are listed).
    refresh_seconds : float
        Seconds between refreshes of the job list and the metrics.
    """

    TITLE = "CIANNA On-The-Fly"
    CSS = """
    #status { height: 1; padding: 0 1; background: $boost; }
    #status.error { background: $error; color: $text; }
    #main { height: 1fr; }
    #jobs { width: 3fr; height: 1fr; }
    #side { width: 2fr; height: 1fr; }
    #detail-scroll { height: 1fr; border: round $primary; }
    #models-scroll { height: 1fr; border: round $secondary; display: none; }
    #models-scroll.shown { display: block; }
    #filter { display: none; }
    #filter.shown { display: block; }
    #metrics { height: 1; padding: 0 1; background: $primary-background; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("r", "refresh_now", "refresh"),
        Binding("f", "cycle_filter", "phase filter"),
        Binding("slash", "edit_filter", "type filter"),
        Binding("a", "abort", "abort job"),
        Binding("d", "delete", "delete job"),
        Binding("m", "toggle_models", "models"),
    ]

    def __init__(self, client: Client, refresh_seconds: float = 5.0) -> None:
        super().__init__()
        self.client = client
        self.refresh_seconds = max(0.2, float(refresh_seconds))
        self.jobs: dict[str, Job] = {}
        self.phase_filter: tuple[str, ...] = ()
        self.last_error: str | None = None
        self.metrics_text = "metrics: waiting for the service..."
        self.models_text = "models: loading..."
        self.refreshes = 0

    # -- layout ---------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"connecting to {self.client.url} ...", id="status", markup=False)
        yield Input(placeholder="phases, e.g. queued,executing (empty: all), Enter to apply", id="filter")
        with Horizontal(id="main"):
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
            with Vertical(id="side"):
                with VerticalScroll(id="detail-scroll"):
                    yield Static("no job selected", id="detail", markup=False)
                with VerticalScroll(id="models-scroll"):
                    yield Static(self.models_text, id="models", markup=False)
        yield Static(self.metrics_text, id="metrics", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.client.url
        table = self.query_one("#jobs", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self.refresh_data()
        self.set_interval(self.refresh_seconds, self.refresh_data)

    # -- refreshing (worker thread) -------------------------------------------------------
    @work(thread=True, exclusive=True, group="refresh")
    def refresh_data(self) -> None:
        """Fetch the job list, the documents of jobs that may have changed, and the metrics."""
        try:
            jobs = self._fetch_jobs()
        except Exception as exc:  # noqa: BLE001 - every failure is shown in the UI, never raised
            self.call_from_thread(self._show_error, _message(exc))
            return
        metrics = self._fetch_metrics()
        self.call_from_thread(self._apply, jobs, metrics)

    def _fetch_jobs(self) -> dict[str, Job]:
        from ..client import NotFoundError

        fresh: dict[str, Job] = {}
        for summary in self.client.jobs(last=MAX_JOBS):
            cached = self.jobs.get(summary.job_id)
            if cached is not None and cached.phase in _STABLE and cached.phase == summary.phase:
                fresh[summary.job_id] = cached
                continue
            try:
                fresh[summary.job_id] = self.client.job(summary.url)
            except NotFoundError:  # deleted between the list and the fetch
                continue
        return fresh

    def _fetch_metrics(self) -> str:
        try:
            text = self.client.metrics_text()
            return format_metrics(parse_metrics(text))
        except Exception as exc:  # noqa: BLE001 - metrics are optional (a proxy may hide them)
            return f"metrics unavailable: {_message(exc)}"

    def _apply(self, jobs: dict[str, Job], metrics: str) -> None:
        self.jobs = jobs
        self.metrics_text = metrics
        self.refreshes += 1
        self.query_one("#metrics", Static).update(metrics)
        if self.last_error is not None:
            self.last_error = None
            self.query_one("#status", Static).remove_class("error")
        self._redraw()

    def _show_error(self, message: str) -> None:
        status = self.query_one("#status", Static)
        status.update(f"error: {message}")
        status.add_class("error")
        if message != self.last_error:  # notify once per distinct error, not on every refresh
            self.notify(message, title="service error", severity="error", timeout=8)
        self.last_error = message

    # -- table ----------------------------------------------------------------------------
    def visible_jobs(self) -> list[Job]:
        """The jobs the filter lets through, newest first."""
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        jobs = [job for job in self.jobs.values() if matches_filter(job.phase, self.phase_filter)]
        return sorted(jobs, key=lambda job: job.creation_time or epoch, reverse=True)

    def _redraw(self) -> None:
        table = self.query_one("#jobs", DataTable)
        selected = self.selected_job_id()
        table.clear()
        for job in self.visible_jobs():
            table.add_row(*job_row(job), key=job.job_id)
        if selected is not None and selected in self.jobs and table.row_count:
            try:
                table.move_cursor(row=table.get_row_index(selected))
            except Exception:  # noqa: BLE001 - the selected job is filtered out
                pass
        self._update_status()
        self._update_detail()

    def _update_status(self) -> None:
        if self.last_error is not None:
            return
        shown = self.query_one("#jobs", DataTable).row_count
        wanted = ",".join(self.phase_filter) if self.phase_filter else "all"
        self.query_one("#status", Static).update(
            f"{shown} of {len(self.jobs)} jobs | phase filter: {wanted} | refresh every {self.refresh_seconds:g}s")

    def selected_job_id(self) -> str | None:
        table = self.query_one("#jobs", DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:  # noqa: BLE001 - no valid cursor
            return None
        return key.value if key is not None else None

    def _update_detail(self) -> None:
        job_id = self.selected_job_id()
        job = self.jobs.get(job_id) if job_id else None
        self.query_one("#detail", Static).update(job_detail(job) if job else "no job selected")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        try:
            self._update_detail()
        except NoMatches:  # a highlight still queued while the app closes: its widgets are gone
            pass

    # -- actions --------------------------------------------------------------------------
    def action_refresh_now(self) -> None:
        self.refresh_data()

    def action_cycle_filter(self) -> None:
        current = self.phase_filter[0] if len(self.phase_filter) == 1 else None
        index = FILTER_CYCLE.index(current) if current in FILTER_CYCLE else 0
        following = FILTER_CYCLE[(index + 1) % len(FILTER_CYCLE)]
        self.set_filter(() if following is None else (following,))

    def set_filter(self, phases: tuple[str, ...]) -> None:
        self.phase_filter = phases
        self._redraw()

    def action_edit_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ",".join(self.phase_filter)
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "filter":
            return
        self.set_filter(parse_filter(event.value))
        event.input.remove_class("shown")
        self.query_one("#jobs", DataTable).focus()

    def on_key(self, event) -> None:
        box = self.query_one("#filter", Input)
        if event.key == "escape" and box.has_focus:
            box.remove_class("shown")
            self.query_one("#jobs", DataTable).focus()
            event.stop()

    def action_abort(self) -> None:
        self._confirm_then("abort")

    def action_delete(self) -> None:
        self._confirm_then("delete")

    def _confirm_then(self, what: str) -> None:
        job_id = self.selected_job_id()
        if job_id is None:
            self.notify(f"no job selected to {what}", severity="warning")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.job_action(what, job_id)
            else:
                self.notify(f"{what} of {job_id} cancelled")

        self.push_screen(ConfirmScreen(f"{what.capitalize()} job {job_id}?"), answered)

    @work(thread=True, group="actions")
    def job_action(self, what: str, job_id: str) -> None:
        """Abort or delete one job; the result (or the service's refusal) is a notification."""
        job = self.jobs.get(job_id)
        try:
            target = job if job is not None else self.client.job(job_id)
            if what == "abort":
                target.abort()
                message, severity = f"job {job_id} aborted: now {target.phase}", "information"
            else:
                target.delete()
                message, severity = f"job {job_id} deleted", "information"
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            message, severity = f"cannot {what} job {job_id}: {_message(exc)}", "error"
        self.call_from_thread(self.notify, message, severity=severity)
        self.call_from_thread(self.refresh_data)

    def action_toggle_models(self) -> None:
        pane = self.query_one("#models-scroll")
        pane.toggle_class("shown")
        if pane.has_class("shown"):
            self.load_models()

    @work(thread=True, exclusive=True, group="models")
    def load_models(self) -> None:
        try:
            text = format_models(self.client.models())
        except Exception as exc:  # noqa: BLE001 - shown, not raised
            text = f"models unavailable: {_message(exc)}"
        self.call_from_thread(self._show_models, text)

    def _show_models(self, text: str) -> None:
        self.models_text = text
        self.query_one("#models", Static).update(text)


def _message(exc: Exception) -> str:
    from ..client import client_message

    return client_message(exc) if hasattr(exc, "message") else f"{type(exc).__name__}: {exc}"


def run_dashboard(client: Client, refresh_seconds: float = 5.0) -> None:
    """Run the dashboard in this terminal until the user quits."""
    Dashboard(client, refresh_seconds).run()
