// Keeps a page live (the dashboard, a node page): every few seconds it reads the same
// URL again and swaps in the page's [data-live] regions, so an operator watching a
// failover need not reload. Our own file, no library; a pause button stops it (kept
// per tab), and nothing is fetched while the tab is hidden.
(function () {
  "use strict";
  var control = document.getElementById("tm-live-control");
  if (!control || !window.fetch) {
    return;
  }
  var seconds = Number(control.getAttribute("data-seconds")) || 5;
  var button = control.querySelector("button");
  var state = control.querySelector(".tm-live-state");
  var key = "tm-live-paused";
  var paused = window.sessionStorage.getItem(key) === "1";
  var busy = false;

  function show(text) {
    button.textContent = paused ? "Resume live updates" : "Pause live updates";
    control.setAttribute("data-paused", paused ? "1" : "0");
    state.textContent = text || (paused ? "Paused." : "Updating every " + seconds + " s.");
  }

  function refresh() {
    if (paused || busy || document.hidden) {
      return;
    }
    busy = true;
    window.fetch(window.location.href, { credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error(String(response.status));
        }
        return response.text();
      })
      .then(function (text) {
        if (paused) {
          return; // paused while this was on its way: the page stays as the operator froze it
        }
        var fresh = new DOMParser().parseFromString(text, "text/html");
        var regions = document.querySelectorAll("[data-live]");
        for (var i = 0; i < regions.length; i++) {
          var replacement = fresh.getElementById(regions[i].id);
          if (replacement) {
            regions[i].replaceWith(document.importNode(replacement, true));
          }
        }
        var count = Number(control.getAttribute("data-refreshes") || 0) + 1;
        control.setAttribute("data-refreshes", String(count));
        show();
      })
      .catch(function () {
        show("Could not update; trying again in " + seconds + " s.");
      })
      .finally(function () {
        busy = false;
      });
  }

  button.addEventListener("click", function () {
    paused = !paused;
    window.sessionStorage.setItem(key, paused ? "1" : "0");
    show();
    refresh();
  });
  show();
  window.setInterval(refresh, seconds * 1000);
})();
