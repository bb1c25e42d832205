// The upload page's progress bar: polls the JSON status (data-status-url) until the
// import is finished. A file, not inline: the console's Content-Security-Policy runs
// scripts from the site only (config/security.py).
(function () {
  const root = document.getElementById("catalog-upload");
  const statusUrl = root && root.dataset.statusUrl;
  if (!statusUrl) {
    return;
  }
  const labels = {queued: "Queued", running: "Running", done: "Done", failed: "Failed", cancelled: "Cancelled"};
  const bar = document.getElementById("import-progress");
  function show(s) {
    bar.value = s.progress;
    bar.textContent = s.progress + "%";
    document.getElementById("import-progress-text").textContent = s.progress + "%";
    document.getElementById("import-rows").textContent = s.rows;
    document.getElementById("import-state").textContent = labels[s.state] || s.state;
    root.dataset.state = s.state;
    for (const k of ["created", "updated", "deactivated", "rejected"]) {
      document.getElementById("summary-" + k).textContent = s[k];
    }
  }
  function finish(s) {
    document.getElementById("import-message").textContent = s.message;
    document.getElementById("import-summary").classList.remove("hidden");
    if (s.has_error_file) {
      // Reload once so the first rejected rows are listed under the counts.
      window.location.reload();
    }
  }
  function poll() {
    fetch(statusUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(r => r.json())
      .then(s => {
        show(s);
        if (["done", "failed", "cancelled"].includes(s.state)) { finish(s); } else { setTimeout(poll, 400); }
      })
      .catch(() => setTimeout(poll, 2000));
  }
  poll();
})();
