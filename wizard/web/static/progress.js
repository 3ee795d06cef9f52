// Polls the create progress; the page works without it (Refresh).
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box) return;
  function show(id, on) { var e = document.getElementById(id); if (e) e.hidden = !on; }
  function render(p) {
    var ol = document.getElementById("steps");
    ol.textContent = "";
    p.steps.forEach(function (s) {
      var li = document.createElement("li");
      li.className = s.state;
      var mark = document.createElement("span"); mark.className = "mark";
      var name = document.createElement("span"); name.className = "name"; name.textContent = s.name;
      var st = document.createElement("span"); st.className = "state"; st.textContent = s.state;
      li.append(mark, name, " ", st);
      ol.appendChild(li);
    });
    box.dataset.state = p.state;
    var err = document.getElementById("error");
    err.textContent = p.error || "";
    err.hidden = !p.error;
    show("failed", p.state === "failed");
    show("unconfirmed", p.state === "unconfirmed");
    show("done", p.state === "done");
  }
  function poll() {
    fetch("/progress.json", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) return;
        render(p);
        if (p.state === "running") setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  if (box.dataset.state === "running") setTimeout(poll, 500);
})();
