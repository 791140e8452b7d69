// The shop's own script: refresh the totals the moment a certificate is accepted, and submit
// the ship-to choice on change. Tax is still decided on the server when the order is placed.
(function () {
  "use strict";
  function refreshTotals() {
    var totals = document.getElementById("totals");
    if (!totals) return;
    fetch("/checkout/totals", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) return;
        ["subtotal", "tax", "total", "taxLabel"].forEach(function (key) {
          var node = totals.querySelector('[data-total="' + key + '"]');
          if (node) node.textContent = data[key];
        });
      })
      .catch(function () { /* keep the totals shown; placing the order recomputes them */ });
  }
  document.addEventListener("certwidget:success", refreshTotals);
  document.addEventListener("DOMContentLoaded", function () {
    var select = document.getElementById("ship-to");
    if (select && select.form) {
      select.addEventListener("change", function () { select.form.submit(); });
    }
  });
})();
