<?php
/**
 * invoice-sync: give WHMCS invoices their legal number from the central coordinator, through
 * the agent's sidecar.
 *
 * Install: copy this file to <whmcs>/includes/hooks/invoice_sync.php AND the addon module's
 * folder to <whmcs>/modules/addons/invoice_sync/ (its lib/numbering.php does the numbering; the
 * module need not be activated), and run the agent's sidecar on the same machine
 * (`invoice-sync-agent serve`). PHP never holds the coordinator token; it only talks to the
 * sidecar on 127.0.0.1 or a unix socket. Turn off WHMCS's own "Sequential Paid Invoice
 * Numbering", or WHMCS writes its numbers first and this hook (rightly) skips them.
 *
 * Settings: a constant (e.g. in configuration.php) or an environment variable of that name.
 *   INVOICE_SYNC_NUMBER_ON  'paid' (default: number on payment, proforma mode) | 'created'
 *   INVOICE_SYNC_SIDECAR    'http://127.0.0.1:8765' (default) | 'unix:/run/invoice-sync/agent.sock'
 *   INVOICE_SYNC_TIMEOUT    seconds to wait for the sidecar (default 30; it retries for us)
 *
 * Fails closed: on any error the invoice stays unnumbered, the reason goes to the activity log,
 * and the agent's poller numbers it later. The same invoice always gets the same number, so
 * running twice (both hooks of an event, or hook and poller) is harmless.
 */

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

function invoice_sync_setting($name, $default)
{
    if (defined($name)) {
        return constant($name);
    }
    $value = getenv($name);
    return ($value === false || $value === '') ? $default : $value;
}

/** Where the numbering library is: the addon module's lib/, under WHMCS's root. */
function invoice_sync_library()
{
    $root = defined('ROOTDIR') ? ROOTDIR : dirname(__DIR__, 2); // includes/hooks/ → the root
    return $root . '/modules/addons/invoice_sync/lib/numbering.php';
}

/** The library's settings for the sidecar transport, from this hook's constants. */
function invoice_sync_standalone_settings()
{
    return array_merge(invoice_sync_addon_defaults(), array(
        'transport' => 'sidecar',
        'sidecar' => (string) invoice_sync_setting('INVOICE_SYNC_SIDECAR', 'http://127.0.0.1:8765'),
        'number_on' => (string) invoice_sync_setting('INVOICE_SYNC_NUMBER_ON', 'paid'),
        'timeout' => (string) invoice_sync_setting('INVOICE_SYNC_TIMEOUT', 30),
        'attempts' => '1',  // the sidecar retries the coordinator itself
        'record' => '0',    // no module table here: the sidecar's journal remembers the numbers
    ));
}

/** Number one invoice (the addon module's page also looks for this function). */
function invoice_sync_number($invoiceId)
{
    if (!function_exists('invoice_sync_addon_number')) {
        logActivity("invoice-sync: invoice $invoiceId not numbered: " . invoice_sync_library()
            . ' is missing; copy the folder modules/addons/invoice_sync/ into WHMCS'
            . ' (the agent poller will finish it)');
        return;
    }
    invoice_sync_addon_number($invoiceId, invoice_sync_standalone_settings());
}

if (is_file(invoice_sync_library())) {
    require_once invoice_sync_library();
    $invoiceSyncEvents = invoice_sync_addon_events(invoice_sync_standalone_settings()['number_on']);
} else {
    // Register anyway: every invoice the hook cannot number says why in the activity log.
    $invoiceSyncEvents = invoice_sync_setting('INVOICE_SYNC_NUMBER_ON', 'paid') === 'created'
        ? array('InvoiceCreationPreEmail', 'InvoiceCreated') : array('InvoicePaidPreEmail', 'InvoicePaid');
}
foreach ($invoiceSyncEvents as $invoiceSyncEvent) {
    add_hook($invoiceSyncEvent, 1, function ($vars) {
        invoice_sync_number($vars['invoiceid']);
    });
}
