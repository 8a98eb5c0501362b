// Progressive enhancement for every page; everything works without it. No inline scripts: the
// pages' Content-Security-Policy forbids them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // The organization switcher (and any other select marked data-autosubmit) submits on change.
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form.submit());
  }

  // Copy buttons: <button data-copy="ID"> copies the value (or text) of the element ID and says
  // so in the element marked data-copy-status="ID" (a status region).
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const id = button.dataset.copy;
      const source = document.getElementById(id);
      const status = document.querySelector(`[data-copy-status="${id}"]`);
      if (!source) return;
      const text = "value" in source ? source.value : source.textContent;
      try {
        await navigator.clipboard.writeText(text);
        if (status) status.textContent = "Copied to the clipboard.";
      } catch (error) {
        if (source.select) source.select();
        if (status) status.textContent = "Select the text and copy it with Ctrl+C (⌘C).";
      }
    });
  }
});
