// The studio's library pages (service/routes/studio_library.py): a whole shoot uploaded
// as one batch with progress per photo, the delete buttons' confirmation, and a shoot page
// that refreshes once its last critique is done. Plain script, no inline code, no CDN.
"use strict";

(() => {
  const POLL_MS = 1500;
  const $ = (id) => document.getElementById(id);

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body.error && body.error.message) return body.error.message;
    } catch (_ignored) {
      // not the service's JSON error shape
    }
    return `the server answered ${response.status} ${response.statusText}`;
  }

  // checkFile(form, file) and follow(jobId, onUpdate, onEnd) are studio.js's: base.html
  // loads it before this script on every studio page, so both pages check a file and
  // follow a job (events stream, else polling) the same way.

  function progressRow(label) {
    const li = document.createElement("li");
    li.className = "job shoot-job";
    const name = document.createElement("span");
    name.className = "job-advisor";
    name.textContent = label;
    const bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute("aria-label", `${label}: progress`);
    const phase = document.createElement("span");
    phase.className = "job-phase";
    phase.textContent = "sending";
    li.append(name, bar, phase);
    $("shoot-jobs").append(li);
    return { li, bar, phase };
  }

  // One photo for one advisor; a full queue (503) is waited out as its Retry-After says.
  async function send(batchId, file, advisor, mode) {
    for (let attempt = 0; attempt < 60; attempt += 1) {
      const data = new FormData();
      data.append("image", file, file.name);
      data.append("advisor", advisor);
      data.append("mode", mode);
      const response = await fetch(`/batches/${batchId}/jobs`, { method: "POST", body: data });
      if (response.status !== 503) return response;
      const wait = Number(response.headers.get("Retry-After") || "2");
      await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 10) * 1000));
    }
    throw new Error("the queue stayed full");
  }

  async function submitShoot(form, input, event) {
    event.preventDefault();
    const showError = (message) => {
      $("shoot-error").textContent = message;
      $("shoot-error").hidden = message === "";
    };
    const files = [...input.files];
    const advisors = [...form.querySelectorAll("input[name=advisor]:checked")];
    if (!files.length) return showError("Choose photos first.");
    const problems = files.map((file) => checkFile(form, file)).filter(Boolean);
    if (problems.length) return showError(problems.join(" "));
    if (!advisors.length) return showError("Choose at least one advisor.");
    showError("");
    $("shoot-submit").disabled = true;
    const created = await fetch("/batches?source=studio", { method: "POST" });
    if (created.status !== 201) {
      $("shoot-submit").disabled = false;
      return showError(`The shoot was not started: ${await errorMessage(created)}`);
    }
    const batch = await created.json();
    $("shoot-jobs").replaceChildren();
    $("shoot-progress").hidden = false;
    $("open-shoot").href = batch.links.studio;
    let open = 0;
    const finished = () => {
      open -= 1;
      if (open === 0) $("shoot-done").hidden = false;
    };
    for (const file of files) {
      for (const box of advisors) {
        const name = box.labels[0].querySelector(".card-name").textContent;
        const row = progressRow(`${file.name} · ${name}`);
        open += 1;
        let response;
        try {
          response = await send(batch.id, file, box.value, $("shoot-mode").value);
        } catch (_error) {
          response = null;
        }
        if (!response || response.status !== 202) {
          row.li.dataset.status = "refused";
          row.phase.textContent = response ? `refused: ${await errorMessage(response)}` : "the service could not be reached";
          finished();
          continue;
        }
        const job = await response.json();
        row.li.dataset.jobId = job.job;
        follow(
          job.job,
          (state) => {
            row.bar.value = state.progress;
            row.phase.textContent = state.phase === "queued" && state.position ? `queued (position ${state.position})` : state.phase;
          },
          (state) => {
            row.li.dataset.status = state.status;
            row.phase.textContent = state.status === "failed" ? `failed: ${state.error || "unknown error"}` : "done";
            finished();
          },
        );
      }
    }
    $("shoot-submit").disabled = false;
  }

  function initShootForm(form) {
    const input = $("shoot-input");
    const zone = $("shoot-drop");
    const chosen = () => {
      const n = input.files.length;
      $("shoot-chosen").textContent = n ? `${n} photo${n === 1 ? "" : "s"} chosen` : "";
    };
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      });
    }
    for (const name of ["dragleave", "drop"]) zone.addEventListener(name, () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (!event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      chosen();
    });
    input.addEventListener("change", chosen);
    form.addEventListener("submit", (event) => submitShoot(form, input, event));
  }

  // With script, the delete goes through the API (DELETE /jobs/{id}, what an app uses);
  // the form itself, a plain POST, is the page's way without script.
  async function deleteJob(form, event) {
    event.preventDefault();
    if (!window.confirm(form.dataset.confirm)) return;
    const card = form.closest("[data-job-id]");
    const response = await fetch(`/jobs/${card.dataset.jobId}`, { method: "DELETE" });
    if (response.ok) return window.location.assign(form.elements.back.value);
    let box = $("library-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "library-error";
      box.className = "error";
      box.setAttribute("role", "alert");
      $("history-filter").after(box);
    }
    box.textContent = await errorMessage(response);
  }

  // A shoot page with critiques still running asks the batch until none is, then reloads.
  function initShootPage(section) {
    const filter = $("shoot-filter");
    for (const select of filter.querySelectorAll("select")) {
      select.addEventListener("change", () => filter.requestSubmit());
    }
    if (Number(section.dataset.pending) === 0) return;
    const check = async () => {
      try {
        const response = await fetch(`/batches/${section.dataset.batchId}`);
        if (response.ok) {
          const batch = await response.json();
          if (batch.photos.every((p) => p.status === "done" || p.status === "failed")) {
            return window.location.reload();
          }
        }
      } catch (_ignored) {
        // try again
      }
      setTimeout(check, POLL_MS);
    };
    setTimeout(check, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const form of document.querySelectorAll("form.delete-job")) {
      form.addEventListener("submit", (event) => deleteJob(form, event));
    }
    if ($("shoot-form")) initShootForm($("shoot-form"));
    if ($("shoot")) initShootPage($("shoot"));
  });
})();
