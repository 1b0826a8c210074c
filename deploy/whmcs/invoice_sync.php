<?php
/**
 * invoice-sync: give WHMCS invoices their legal number from the central coordinator.
 *
 * Install: copy to <whmcs>/includes/hooks/invoice_sync.php and run the agent's sidecar on the
 * same machine (`invoice-sync-agent serve`). PHP never holds the coordinator token; it only
 * talks to the sidecar on 127.0.0.1 or a unix socket. Turn off WHMCS's own "Sequential Paid
 * Invoice Numbering", or WHMCS writes its numbers first and this hook (rightly) skips them.
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

use WHMCS\Database\Capsule;

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

/** POST JSON to the sidecar; return the decoded answer or throw with its error message. */
function invoice_sync_call($path, array $body)
{
    $sidecar = invoice_sync_setting('INVOICE_SYNC_SIDECAR', 'http://127.0.0.1:8765');
    $ch = curl_init();
    if (strpos($sidecar, 'unix:') === 0) {
        curl_setopt($ch, CURLOPT_UNIX_SOCKET_PATH, substr($sidecar, 5));
        $sidecar = 'http://localhost';
    }
    curl_setopt_array($ch, array(
        CURLOPT_URL => rtrim($sidecar, '/') . $path,
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => json_encode($body),
        CURLOPT_HTTPHEADER => array('Content-Type: application/json'),
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => (int) invoice_sync_setting('INVOICE_SYNC_TIMEOUT', 30),
        CURLOPT_PROXY => '', // never through a proxy: the sidecar is local
    ));
    $raw = curl_exec($ch);
    $code = (int) curl_getinfo($ch, CURLINFO_HTTP_CODE);
    $error = curl_error($ch);
    curl_close($ch);
    if ($raw === false) {
        throw new RuntimeException("agent sidecar unreachable ($error)");
    }
    $answer = json_decode($raw, true);
    if ($code !== 200 || !is_array($answer)) {
        $message = is_array($answer) && isset($answer['message']) ? $answer['message'] : 'no JSON';
        throw new RuntimeException("agent sidecar answered HTTP $code: $message");
    }
    return $answer;
}

function invoice_sync_number($invoiceId)
{
    $invoiceId = (int) $invoiceId;
    $step = 'reading the invoice';
    try {
        $invoice = localAPI('GetInvoice', array('invoiceid' => $invoiceId));
        if (!isset($invoice['result']) || $invoice['result'] !== 'success') {
            throw new RuntimeException(isset($invoice['message']) ? $invoice['message'] : 'GetInvoice failed');
        }
        if (trim((string) $invoice['invoicenum']) !== '') {
            return; // numbered already (by us, the poller, or an admin): never renumber
        }
        // Credit notes are invoices with a negative total (modules that add them do so).
        $request = array(
            'document' => ((float) $invoice['total'] < 0) ? 'credit_note' : 'invoice',
            'reference' => (string) $invoiceId,
        );
        $date = substr((string) $invoice['date'], 0, 10);
        if (preg_match('/^\d{4}-\d{2}-\d{2}$/', $date) && $date !== '0000-00-00') {
            $request['date'] = $date; // the document date picks the numbering period
        }

        $step = 'taking a number';
        $allocation = invoice_sync_call('/allocate', $request);
        $number = (string) $allocation['formatted'];

        $step = "writing $number";
        // Only into an unnumbered invoice: a poller or an admin may have been faster.
        Capsule::table('tblinvoices')->where('id', $invoiceId)->where('invoicenum', '')
            ->update(array('invoicenum' => $number));
        $written = (string) Capsule::table('tblinvoices')->where('id', $invoiceId)->value('invoicenum');
        if ($written !== $number) {
            // Someone else numbered it; ours was never used: void it, with the reason.
            $step = "voiding $number";
            invoice_sync_call('/void', array(
                'id' => $allocation['id'],
                'reason' => "invoice $invoiceId was numbered '$written' by someone else",
            ));
            logActivity("invoice-sync: invoice $invoiceId already had number '$written'; voided $number");
            return;
        }

        $step = "confirming $number";
        invoice_sync_call('/confirm', array('id' => $allocation['id'], 'invoicenum' => $number));
    } catch (Throwable $e) {
        logActivity("invoice-sync: invoice $invoiceId, $step failed: " . $e->getMessage()
            . ' (the agent poller will finish it)');
    }
}

// Both hooks of the event: *PreEmail runs before the PDF is mailed, the other also runs when no
// mail goes out. The second call finds the number and does nothing.
if (invoice_sync_setting('INVOICE_SYNC_NUMBER_ON', 'paid') === 'created') {
    $invoiceSyncHooks = array('InvoiceCreationPreEmail', 'InvoiceCreated');
} else {
    $invoiceSyncHooks = array('InvoicePaidPreEmail', 'InvoicePaid');
}
foreach ($invoiceSyncHooks as $invoiceSyncHook) {
    add_hook($invoiceSyncHook, 1, function ($vars) {
        invoice_sync_number($vars['invoiceid']);
    });
}
