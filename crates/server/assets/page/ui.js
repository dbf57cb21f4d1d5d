// The team page's only script: live status for unfinished jobs, and two
// small conveniences. Pages work without it (reload to see changes).
"use strict";

function follow() {
  const live = () => Array.from(document.querySelectorAll("article.job[data-live]"));
  const jobs = live().map((el) => el.dataset.job);
  if (jobs.length === 0) return;
  const query = jobs.map((id) => "job=" + encodeURIComponent(id)).join("&");
  const source = new EventSource("/ui/events?" + query);
  source.onmessage = async (message) => {
    const change = JSON.parse(message.data);
    const card = document.getElementById("job-" + change.job);
    if (!card) return;
    const status = card.querySelector("[data-status]");
    status.textContent = change.status;
    status.className = "status status-" + change.status;
    if (change.finished) {
      // The server draws the finished card (video, credits, error), escaped.
      const answer = await fetch("/ui/jobs/" + encodeURIComponent(change.job) + "/card", { credentials: "same-origin" });
      if (answer.ok) {
        const template = document.createElement("template");
        template.innerHTML = (await answer.text()).trim();
        const fresh = template.content.firstElementChild;
        if (fresh) card.replaceWith(fresh);
      } else {
        card.removeAttribute("data-live");
      }
      if (live().length === 0) source.close();
    }
  };
  source.onerror = () => {
    if (live().length === 0) source.close();
  };
}

// An unfinished job's time counts up from what the server drew, by this
// page's own clock (so a browser's clock that is off does not matter).
function tick() {
  const drawn = performance.now();
  const format = (secs) => (secs < 60 ? secs + " s" : Math.floor(secs / 60) + " min " + String(secs % 60).padStart(2, "0") + " s");
  setInterval(() => {
    const passed = Math.floor((performance.now() - drawn) / 1000);
    for (const el of document.querySelectorAll("article.job[data-live] [data-elapsed]")) {
      el.textContent = format(Number(el.dataset.elapsed) + passed) + " so far";
    }
  }, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  follow();
  tick();
  for (const form of document.querySelectorAll("form[data-autosubmit]")) {
    form.querySelector("select").addEventListener("change", () => form.submit());
  }
  // A create costs money: its button stays down once pressed (the server
  // makes one job of a form sent twice anyway).
  for (const form of document.querySelectorAll("form[data-once]")) {
    form.addEventListener("submit", () => {
      for (const button of form.querySelectorAll("button[type=submit]")) button.disabled = true;
    });
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
