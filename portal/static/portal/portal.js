// Progressive enhancement for every page; everything works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // The organization switcher (and any other select marked data-autosubmit) submits on change.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }
});
