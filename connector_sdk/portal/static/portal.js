// While a sync runs, the page reloads itself every few seconds to show its progress, but never under a person's hands:
// not while a form control has focus, and not once a form on the page has been changed and not yet sent.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh")) || 3;
  var edited = false;
  document.addEventListener("input", function () { edited = true; }, true);
  document.addEventListener("change", function () { edited = true; }, true);

  function busy() {
    var active = document.activeElement;
    if (active && active.closest && active.closest("form, details") && active !== document.body) {
      return true;
    }
    return edited;
  }

  window.setInterval(function () {
    if (!busy()) {
      window.location.reload();
    }
  }, seconds * 1000);
})();
