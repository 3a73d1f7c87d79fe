// The studio's one script (service/routes/studio.py serves it; no inline script, no CDN).
// The home page: check the photo, post one job per advisor, follow each job's events
// stream (GET /jobs/{id}/events), polling GET /jobs/{id} where the stream fails.
// A pending critique page: the same, then it reloads into the critique. The critique
// page: its Print button. The comparison page: follows its unfinished jobs, then reloads.
"use strict";

const POLL_MS = 1000;

function $(id) {
  return document.getElementById(id);
}

function showError(message) {
  const box = $("form-error");
  box.textContent = message;
  box.hidden = message === "";
}

// The page's check; the server checks again (type by content, size while reading).
function checkFile(form, file) {
  if (!file) return "Choose a photo first.";
  const accepted = form.dataset.accept.split(",");
  const dot = file.name.lastIndexOf(".");
  const suffix = dot < 0 ? "" : file.name.slice(dot).toLowerCase();
  if (!accepted.includes(file.type) && !accepted.includes(suffix)) {
    return `${file.name} is not a supported image (${file.type || "unknown type"}).`;
  }
  const max = Number(form.dataset.maxBytes);
  if (file.size > max) {
    const mib = (n) => (n / 1048576).toFixed(1);
    return `${file.name} is ${mib(file.size)} MiB; the limit is ${mib(max)} MiB.`;
  }
  if (file.size === 0) return `${file.name} is empty.`;
  return "";
}

function showPreview(file) {
  const figure = $("preview");
  const img = $("preview-img");
  if (img.src) URL.revokeObjectURL(img.src);
  img.hidden = false;
  img.onerror = () => {
    img.hidden = true; // a format the browser cannot show (RAW, HEIC): the name stays
  };
  img.src = URL.createObjectURL(file);
  $("preview-name").textContent = file.name;
  figure.hidden = false;
}

function chosen(form, input) {
  const file = input.files[0];
  const problem = checkFile(form, file);
  showError(problem);
  if (!problem) showPreview(file);
  else $("preview").hidden = true;
}

function wireDropZone(form, input) {
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!event.dataTransfer.files.length) return;
    input.files = event.dataTransfer.files;
    chosen(form, input);
  });
  input.addEventListener("change", () => chosen(form, input));
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body.error && body.error.message) return body.error.message;
  } catch (_ignored) {
    // not the service's JSON error shape: fall through to the status line
  }
  return `the server answered ${response.status} ${response.statusText}`;
}

// One row per job: its advisor, a progress bar, what it is doing, a link when done.
function jobRow(advisorName, jobId) {
  const li = document.createElement("li");
  li.className = "job";
  li.dataset.jobId = jobId;
  const name = document.createElement("span");
  name.className = "job-advisor";
  name.textContent = advisorName;
  const bar = document.createElement("progress");
  bar.className = "job-progress";
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", `${advisorName}: progress`);
  const phase = document.createElement("span");
  phase.className = "job-phase";
  phase.textContent = "queued";
  li.append(name, bar, phase);
  $("job-list").append(li);
  return li;
}

// What a job is doing, in words: `stage` from the events stream (service/stages.py), or
// the coarser `phase` where only GET /jobs/{id} answers (the polling fallback).
const STAGE_OF_PHASE = { preparing: "profiling", generating: "critiquing" };

function describe(state) {
  const stage = state.stage || STAGE_OF_PHASE[state.phase] || state.phase;
  if (stage === "queued") return state.position ? `queued (position ${state.position})` : "queued";
  if (stage === "profiling") return "profiling the photo";
  if (stage === "retrieving") return "retrieving exemplars";
  if (stage === "critiquing") {
    if (state.tokens) return `critiquing (${state.tokens} tokens so far)`;
    return `critiquing (${Math.round(state.progress * 100)}%)`;
  }
  return stage;
}

// Calls onUpdate(state) on every change and onEnd(state) once, from the events stream or,
// if it fails before the end, from polling.
function follow(jobId, onUpdate, onEnd) {
  let ended = false;
  const end = (state) => {
    if (!ended) {
      ended = true;
      onEnd(state);
    }
  };
  const poll = async () => {
    if (ended) return;
    try {
      const response = await fetch(`/jobs/${jobId}`, { headers: { Accept: "application/json" } });
      if (response.ok) {
        const job = await response.json();
        const state = { ...job, position: null, error: job.error };
        onUpdate(state);
        if (job.status === "done" || job.status === "failed") return end(state);
      }
    } catch (_ignored) {
      // the service is unreachable for a moment: try again
    }
    setTimeout(poll, POLL_MS);
  };
  if (!window.EventSource) return poll();
  const source = new EventSource(`/jobs/${jobId}/events`);
  source.addEventListener("progress", (event) => onUpdate(JSON.parse(event.data)));
  for (const name of ["done", "failed"]) {
    source.addEventListener(name, (event) => {
      source.close();
      const state = JSON.parse(event.data);
      onUpdate(state);
      end(state);
    });
  }
  source.onerror = () => {
    if (ended) return;
    source.close();
    poll();
  };
}

function trackJob(advisorName, jobId, single) {
  const row = jobRow(advisorName, jobId);
  const bar = row.querySelector("progress");
  const phase = row.querySelector(".job-phase");
  follow(
    jobId,
    (state) => {
      bar.value = state.progress;
      phase.textContent = describe(state);
    },
    (state) => {
      row.dataset.status = state.status;
      if (state.status === "failed") {
        phase.textContent = `failed: ${state.error || "unknown error"}`;
        return;
      }
      const link = document.createElement("a");
      link.href = `/studio/jobs/${jobId}`;
      link.className = "job-link";
      link.textContent = `Open ${advisorName}'s critique`;
      phase.textContent = "done";
      row.append(link);
      if (single) window.location.assign(link.href);
    },
  );
}

async function submit(form, input, event) {
  event.preventDefault();
  const file = input.files[0];
  const problem = checkFile(form, file);
  const boxes = [...form.querySelectorAll("input[name=advisor]:checked")];
  if (problem) return showError(problem);
  if (!boxes.length) return showError("Choose at least one advisor.");
  showError("");
  const button = $("submit");
  button.disabled = true;
  $("job-list").replaceChildren();
  const accepted = [];
  const refusals = [];
  for (const box of boxes) {
    const name = box.labels[0].querySelector(".card-name").textContent;
    const data = new FormData();
    data.append("image", file, file.name);
    data.append("advisor", box.value);
    data.append("mode", $("mode-select").value);
    try {
      const response = await fetch("/jobs", { method: "POST", body: data });
      if (response.status === 202) accepted.push([name, (await response.json()).id]);
      else refusals.push(`${name}: ${await errorMessage(response)}`);
    } catch (_error) {
      refusals.push(`${name}: the service could not be reached`);
    }
  }
  button.disabled = false;
  showError(refusals.length ? `Not accepted. ${refusals.join(" ")}` : "");
  if (!accepted.length) return;
  $("jobs").hidden = false;
  const single = accepted.length === 1 && !refusals.length;
  for (const [name, id] of accepted) trackJob(name, id, single);
  if (accepted.length > 1) addCompareLink(accepted[0][1]);
}

// Several advisors on one photo: one page sets their critiques side by side.
function addCompareLink(jobId) {
  const link = document.createElement("a");
  link.id = "compare-link";
  link.href = `/studio/jobs/${jobId}/compare`;
  link.textContent = "Compare the critiques side by side";
  $("jobs").append(link);
}

function initHome() {
  const form = $("studio-form");
  const input = $("photo-input");
  wireDropZone(form, input);
  form.addEventListener("submit", (event) => submit(form, input, event));
}

function initPending(section) {
  if (section.dataset.status === "failed") return;
  const bar = section.querySelector("progress");
  const phase = section.querySelector(".job-phase");
  follow(
    section.dataset.jobId,
    (state) => {
      bar.value = state.progress;
      phase.textContent = describe(state);
    },
    () => window.location.reload(),
  );
}

function initPrint(button) {
  button.hidden = false; // without the script, the browser's own Print still works
  button.addEventListener("click", () => window.print());
}

function initCompare(columns) {
  let left = columns.length;
  for (const column of columns) {
    const bar = column.querySelector("progress");
    const phase = column.querySelector(".job-phase");
    follow(
      column.dataset.pending,
      (state) => {
        if (bar) bar.value = state.progress;
        if (phase) phase.textContent = describe(state);
      },
      () => {
        left -= 1;
        if (left === 0) window.location.reload();
      },
    );
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if ($("studio-form")) initHome();
  const pending = document.querySelector(".pending[data-job-id]");
  if (pending) initPending(pending);
  if ($("print")) initPrint($("print"));
  const unfinished = document.querySelectorAll(".compare-column[data-pending]");
  if (unfinished.length) initCompare([...unfinished]);
});
